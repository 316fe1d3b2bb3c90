//! Raw sockets: an HTTP/1.1 response read byte for byte, for tests that must see exactly
//! what the gateway sent.

use crate::*;

/// An HTTP/1.1 response read off a raw socket by [`read_response`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code of the status line.
    pub status: u16,
    /// The status line and header fields, as received.
    pub head: String,
    /// The body: `Content-Length` bytes, or the chunks of a chunked body joined; empty
    /// without either.
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 response (framed by `Content-Length` or chunked, or with no body)
/// from a raw socket, within [`ANSWER_WITHIN`]: for tests that need to own the socket (its
/// local address, when it closes, what else is sent on it).
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> RawResponse {
    let exchange = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find_bytes(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            read_more(s, &mut buf, &mut chunk).await;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().expect("a Content-Length"));
        let body = if let Some(len) = length {
            while buf.len() < head_end + len {
                read_more(s, &mut buf, &mut chunk).await;
            }
            buf[head_end..head_end + len].to_vec()
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                if let Some(b) = dechunk(&buf[head_end..]) {
                    break b;
                }
                read_more(s, &mut buf, &mut chunk).await;
            }
        } else {
            Vec::new()
        };
        RawResponse { status, head, body }
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| panic!("no whole response within {ANSWER_WITHIN:?}"))
}

async fn read_more<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) {
    use tokio::io::AsyncReadExt;
    let n = s.read(chunk).await.expect("reading the response");
    assert!(
        n > 0,
        "the connection closed mid-response: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole chunked body (no trailers), or `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find_bytes(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line + 2..];
        if size == 0 {
            return data.starts_with(b"\r\n").then_some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
