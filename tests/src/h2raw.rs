//! HTTP/2 written and read by hand, for tests that must send what a well-behaved client
//! never would: frames, HPACK blocks (literals without Huffman coding), and enough of a
//! reader to find a stream's `:status` (RFC 9113, RFC 7541).

use tokio::io::{AsyncRead, AsyncReadExt};

/// The client connection preface, sent before the first frame (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type DATA: a piece of a stream's body.
pub const DATA: u8 = 0x0;
/// Frame type HEADERS: opens a stream with (the start of) a header block.
pub const HEADERS: u8 = 0x1;
/// Frame type RST_STREAM: ends one stream with an error code.
pub const RST_STREAM: u8 = 0x3;
/// Frame type SETTINGS: the sender's connection parameters, or their acknowledgement.
pub const SETTINGS: u8 = 0x4;
/// Frame type PING: 8 opaque bytes the peer echoes with `ACK`.
pub const PING: u8 = 0x6;
/// Frame type GOAWAY: the connection is ending; names the last stream processed.
pub const GOAWAY: u8 = 0x7;
/// Frame type CONTINUATION: the rest of a header block too large for one frame.
pub const CONTINUATION: u8 = 0x9;

/// Flag END_STREAM of DATA and HEADERS: the sender's last frame on the stream.
pub const END_STREAM: u8 = 0x1;
/// Flag ACK of SETTINGS and PING: an acknowledgement, not a new frame of its kind.
pub const ACK: u8 = 0x1;
/// Flag END_HEADERS of HEADERS and CONTINUATION: the header block is complete.
pub const END_HEADERS: u8 = 0x4;

/// Error code CANCEL, for RST_STREAM and GOAWAY: the stream is no longer needed.
pub const CANCEL: u32 = 0x8;

/// The largest frame payload a peer must accept before settings say otherwise.
pub const MAX_FRAME: usize = 16384;

/// Appends one frame.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload too long");
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// One frame of type `kind` on `stream`, as [`put_frame`] writes it.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    put_frame(&mut out, kind, flags, stream, payload);
    out
}

/// An HPACK integer with an `n`-bit prefix, the rest of the first byte being `flags`.
pub fn hpack_int(out: &mut Vec<u8>, n: u8, flags: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK string literal, without Huffman coding.
pub fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// A literal field without indexing, with a new name.
pub fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// The pseudo-header fields of a request: `:method` (GET or POST, from the static table),
/// `:scheme http`, `:path` and `:authority abuse.example` (literals without indexing,
/// static-table names).
pub fn request_block(method: &str, path: &str) -> Vec<u8> {
    request_block_with(method, path, Some("abuse.example"), &[])
}

/// [`request_block`] with any `:authority` (or none) and literal `fields` after it.
pub fn request_block_with(
    method: &str,
    path: &str,
    authority: Option<&str>,
    fields: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = vec![
        match method {
            "GET" => 0x82,
            "POST" => 0x83,
            other => panic!("no static entry for {other}"),
        },
        0x86,
    ];
    hpack_int(&mut out, 4, 0, 4); // :path
    hpack_str(&mut out, path.as_bytes());
    if let Some(a) = authority {
        hpack_int(&mut out, 4, 0, 1); // :authority
        hpack_str(&mut out, a.as_bytes());
    }
    for (name, value) in fields {
        hpack_literal(&mut out, name.as_bytes(), value.as_bytes());
    }
    out
}

/// An HPACK integer with an `n`-bit prefix at `at`: its value and the offset after it.
pub fn read_hpack_int(buf: &[u8], at: usize, n: u8) -> Option<(usize, usize)> {
    let max = (1usize << n) - 1;
    let mut value = usize::from(*buf.get(at)?) & max;
    let mut i = at + 1;
    if value < max {
        return Some((value, i));
    }
    let mut shift = 0;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some((value, i));
        }
        if shift > 28 {
            return None;
        }
    }
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B: '0' to '2' have
/// 5-bit codes 00000 to 00010, '3' to '9' 6-bit codes 011001 to 011111), as HPACK encoders
/// send `:status` values; `None` for anything else.
pub fn huffman_digits(bytes: &[u8]) -> Option<Vec<u8>> {
    let total = bytes.len() * 8;
    let bits = |pos: usize, n: usize| -> u32 {
        (0..n).fold(0, |acc, k| {
            let bit = (bytes[(pos + k) / 8] >> (7 - (pos + k) % 8)) & 1;
            (acc << 1) | u32::from(bit)
        })
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 5 <= total {
        let five = bits(pos, 5);
        if five <= 2 {
            out.push(b'0' + five as u8);
            pos += 5;
        } else if pos + 6 <= total && (0x19..=0x1f).contains(&bits(pos, 6)) {
            out.push(b'3' + (bits(pos, 6) - 0x19) as u8);
            pos += 6;
        } else {
            break;
        }
    }
    // What is left is the end-of-string padding: fewer than 8 bits, all ones.
    let rest = total - pos;
    (rest < 8 && bits(pos, rest) == (1 << rest) - 1).then_some(out)
}

/// The `:status` of a response header block, when it is its first field and either an
/// indexed static entry or a literal with a static `:status` name.
pub fn response_status(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    // Dynamic table size updates (001xxxxx) may come first.
    while block.get(i)? & 0xe0 == 0x20 {
        i = read_hpack_int(block, i, 5)?.1;
    }
    let b = block[i];
    if b & 0x80 != 0 {
        let (index, _) = read_hpack_int(block, i, 7)?;
        return [200, 204, 206, 304, 400, 404, 500]
            .get(index.checked_sub(8)?)
            .copied();
    }
    let (name, at) = read_hpack_int(block, i, if b & 0x40 != 0 { 6 } else { 4 })?;
    if !(8..=14).contains(&name) {
        return None;
    }
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, at) = read_hpack_int(block, at, 7)?;
    let raw = block.get(at..at + len)?;
    let value = if huffman {
        huffman_digits(raw)?
    } else {
        raw.to_vec()
    };
    std::str::from_utf8(&value).ok()?.parse().ok()
}

/// One frame as received.
#[derive(Debug)]
pub struct RawFrame {
    /// The frame type ([`DATA`], [`HEADERS`], ...).
    pub kind: u8,
    /// The flags byte ([`END_STREAM`], [`END_HEADERS`], [`ACK`], ...).
    pub flags: u8,
    /// The stream identifier, without the reserved bit; 0 for connection frames.
    pub stream: u32,
    /// The payload, as many bytes as the frame's length says.
    pub payload: Vec<u8>,
}

/// One frame, `None` at the end of the connection (a clean close).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<RawFrame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    match r.read_exact(&mut payload).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(RawFrame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }))
}
