//! HTTP/1.1 to upstreams: the client side of one connection, driven directly by the task
//! that holds it.
//!
//! A pooled upstream connection does its IO in the request's task: the request head and
//! body are written, and the response head read, by the future of the exchange; the
//! response body is read by the body the client connection relays. Nothing crosses a
//! channel or wakes another task, and a request costs one write and one read on the
//! upstream socket when its body is small.
//!
//! The framing follows RFC 9112: a request body goes out with the client's
//! `Content-Length`, with the length the body knows, or chunked; a response body is empty
//! (HEAD, 1xx, 204, 304), chunked, `Content-Length` delimited or delimited by the close of
//! the connection. Interim 1xx responses are skipped. A response with both
//! `Transfer-Encoding` and `Content-Length`, conflicting lengths, an oversized head or a
//! malformed chunk is refused as a protocol error, never guessed at.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, StatusCode, Version};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ProxyError;
use crate::headers::{self, Hop};
use crate::transport::BoxError;

/// The first read of a response reserves this much; reads that fill their buffer double it
/// up to [`MAX_READ`], so large bodies move in large reads and small ones stay small.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// Largest response head (status line and fields) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted.
const MAX_HEADERS: usize = 128;
/// Header fields a response map holds without growing. hyper's HTTP/1 server keeps the map
/// of the response it wrote and parses the connection's next request into it; sized for a
/// federation delivery's head (a dozen fields: host, date, digest, signature, content type
/// and length, ...) plus the forwarding fields the proxy adds, that parse and the additions
/// never rehash the map. Smaller sizes make every such request grow it once.
const RESPONSE_MAP_FIELDS: usize = 24;
/// Largest chunk-size line, and largest trailer section.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Body frames up to this size are copied next to the head (one write); larger ones are
/// written from their own buffer.
const MAX_COPY: usize = 8 * 1024;
/// Most bytes staged before they are written.
const MAX_STAGE: usize = 64 * 1024;

/// A failed exchange.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading from or writing to the upstream failed.
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before the response was complete.
    #[error("upstream closed the connection before the response was complete")]
    Closed,
    /// The upstream's response is not valid HTTP/1.1.
    #[error("invalid response from upstream: {0}")]
    Protocol(&'static str),
    /// The client's request body failed or did not match its declared length.
    #[error("request body: {0}")]
    ClientBody(BoxError),
}

impl Error {
    /// The rejection the client gets for this failure.
    pub fn kind(&self) -> ProxyError {
        match self {
            Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => ProxyError::UpstreamTimeout,
            Error::Io(_) | Error::Closed => ProxyError::UpstreamReset,
            Error::Protocol(_) => ProxyError::UpstreamProtocol,
            Error::ClientBody(_) => ProxyError::BadRequest("request body"),
        }
    }
}

/// How the body of a response is delimited, and how much of it is left.
#[derive(Debug)]
pub enum Framing {
    /// No (more) body.
    Empty,
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`, at this point of the decoding.
    Chunked(Chunk),
    /// Read until the upstream closes the connection.
    Close,
}

impl Framing {
    pub fn is_end(&self) -> bool {
        matches!(self, Framing::Empty)
    }

    /// The exact length left, when it is known.
    pub fn exact(&self) -> Option<u64> {
        match self {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(*n),
            Framing::Chunked(_) | Framing::Close => None,
        }
    }
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then the final CRLF.
    Trailers,
}

/// How the request body goes out.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// Nothing to send (or nothing left).
    Done,
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// Chunked, until the body ends.
    Chunked,
}

/// One HTTP/1.1 connection to an upstream endpoint, over any byte stream: the pool's is a
/// counted TCP or TLS connection, the tests' a scripted one.
#[derive(Debug)]
pub struct Conn<T> {
    io: T,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// Size of the next read reservation.
    next_read: usize,
    /// Bytes to write: `stage[written..]`, then `data`.
    stage: Vec<u8>,
    written: usize,
    data: Option<Bytes>,
    /// `\r\n` is due after `data` (the end of a large chunk).
    crlf_after_data: bool,
    /// Positions of the response header fields in the head being parsed.
    fields: Vec<Field>,
    /// The request body of the current exchange, and whether it is all written.
    encoding: Encoding,
    written_all: bool,
    /// Nothing happened that rules out another exchange: no close asked for, nothing
    /// abandoned, no error.
    reusable: bool,
    /// Whether the current exchange wrote or received anything, or took anything from the
    /// request body (for retries).
    wrote_any: bool,
    received_any: bool,
    took_body: bool,
}

/// What the framing of a response depends on, noted while its fields are read.
#[derive(Debug, Default)]
struct Fields {
    transfer_encoding: bool,
    chunked: bool,
    content_length: Length,
    close: bool,
}

/// What the `Content-Length` fields of a message say, taken together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Length {
    #[default]
    None,
    Valid(u64),
    /// Not a number, or values that disagree.
    Invalid,
}

impl Length {
    /// Adds one field value (possibly a list): every element must be the same plain
    /// decimal number.
    fn and(self, value: &[u8]) -> Length {
        value.split(|&b| b == b',').fold(self, |length, part| {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Length::Invalid;
            }
            let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            match length {
                Length::None => Length::Valid(n),
                Length::Valid(m) if m == n => length,
                _ => Length::Invalid,
            }
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    /// A connection over `io`.
    pub fn over(io: T) -> Self {
        Conn {
            io,
            rbuf: BytesMut::new(),
            next_read: MIN_READ,
            stage: Vec::new(),
            written: 0,
            data: None,
            crlf_after_data: false,
            fields: Vec::new(),
            encoding: Encoding::Done,
            written_all: true,
            reusable: true,
            wrote_any: false,
            received_any: false,
            took_body: false,
        }
    }

    /// Whether this idle connection can carry a request: nothing unexpected happened on it,
    /// and the upstream has not closed it or sent anything since. Does not block: the read
    /// it tries only succeeds if something is pending.
    pub fn is_usable(&mut self) -> bool {
        if !self.reusable || !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Pending => true,
            // End of stream, an error, or bytes nobody asked for.
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Whether the whole request (head and body) has been written.
    pub fn wrote_request(&self) -> bool {
        self.written_all
    }

    /// Whether the exchange that just ended left the connection ready for another.
    pub fn is_reusable(&self) -> bool {
        self.reusable && self.written_all && self.rbuf.is_empty()
    }

    /// Whether the exchange that failed with `error` can be repeated on another connection:
    /// the failure was the connection's (never the client's body), the upstream sent
    /// nothing back, nothing was taken from the request body, and either nothing was
    /// written or the request had no body and an idempotent method (the upstream closing a
    /// kept-alive connection just as it was reused).
    pub fn may_retry(&self, error: &Error, method: &Method, had_body: bool) -> bool {
        !matches!(error, Error::ClientBody(_))
            && !self.received_any
            && !self.took_body
            && (!self.wrote_any || (!had_body && method.is_idempotent()))
    }

    /// Sends the request and waits for the final response head. The body is streamed as
    /// the upstream takes it; a response that arrives before the body is all sent ends the
    /// exchange (the connection is then not reused).
    pub async fn exchange<B>(
        &mut self,
        parts: &request::Parts,
        body: &mut B,
    ) -> Result<(response::Parts, Framing), Error>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        self.wrote_any = false;
        self.received_any = false;
        self.took_body = false;
        self.encode_head(parts, body)?;
        let head_request = parts.method == Method::HEAD;
        poll_fn(|cx| self.poll_exchange(cx, body, head_request)).await
    }

    fn encode_head(&mut self, parts: &request::Parts, body: &impl Body) -> Result<(), Error> {
        let stage = &mut self.stage;
        stage.clear();
        self.written = 0;
        stage.extend_from_slice(parts.method.as_str().as_bytes());
        stage.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        stage.extend_from_slice(if target.is_empty() {
            b"/"
        } else {
            target.as_bytes()
        });
        stage.extend_from_slice(b" HTTP/1.1\r\n");
        put_fields(stage, &parts.headers);
        self.encoding = if body.is_end_stream() {
            Encoding::Done
        } else if parts.headers.contains_key(header::CONTENT_LENGTH) {
            match content_length(&parts.headers) {
                Some(n) => Encoding::Length(n),
                None => return Err(Error::ClientBody("invalid Content-Length".into())),
            }
        } else if let Some(n) = body.size_hint().exact() {
            let _ = write!(stage, "content-length: {n}\r\n");
            Encoding::Length(n)
        } else {
            stage.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Encoding::Chunked
        };
        stage.extend_from_slice(b"\r\n");
        self.written_all = false;
        Ok(())
    }

    fn poll_exchange<B>(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut B,
        head_request: bool,
    ) -> Poll<Result<(response::Parts, Framing), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut write_error = None;
        loop {
            if !self.written_all && write_error.is_none() {
                match self.poll_write_request(cx, body) {
                    Poll::Ready(Ok(())) => self.written_all = true,
                    Poll::Ready(Err(Error::Io(e))) => {
                        // The upstream may have answered and closed (a 413 for a large
                        // body, say): look for its response before giving up.
                        self.reusable = false;
                        write_error = Some(e);
                    }
                    Poll::Ready(Err(e)) => {
                        self.reusable = false;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => {}
                }
            }
            if let Some(head) = self.parse_head(head_request)? {
                if !self.written_all {
                    // Answered before the body was all sent: the rest is not sent, and the
                    // connection cannot be reused.
                    self.reusable = false;
                }
                return Poll::Ready(Ok(head));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    self.reusable = false;
                    return Poll::Ready(Err(write_error.map_or(Error::Closed, Error::Io)));
                }
                Poll::Ready(Ok(_)) => self.received_any = true,
                Poll::Ready(Err(e)) => {
                    self.reusable = false;
                    return Poll::Ready(Err(Error::Io(write_error.unwrap_or(e))));
                }
                Poll::Pending => {
                    if let Some(e) = write_error {
                        // Nothing more to read now and nothing can be written: the write
                        // error is the answer.
                        return Poll::Ready(Err(Error::Io(e)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes the staged head and the request body as the upstream takes it. Frames that
    /// are ready are staged behind the head first, so a small request goes out in one write.
    fn poll_write_request<B>(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut B,
    ) -> Poll<Result<(), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        loop {
            let room = self.data.is_none() && self.stage.len() - self.written < MAX_STAGE;
            let chunked = match self.encoding {
                Encoding::Done => {
                    ready!(self.poll_write_out(cx))?;
                    return Poll::Ready(Ok(()));
                }
                _ if !room => {
                    ready!(self.poll_write_out(cx))?;
                    continue;
                }
                Encoding::Length(_) => false,
                Encoding::Chunked => true,
            };
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => {
                    ready!(self.poll_write_out(cx))?;
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    if let Encoding::Length(n) = self.encoding {
                        if n > 0 {
                            return Poll::Ready(Err(Error::ClientBody(
                                "the body ended before its Content-Length".into(),
                            )));
                        }
                    }
                    if chunked {
                        self.stage.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.encoding = Encoding::Done;
                    continue;
                }
                // The body failed (cut short, malformed, its stream reset): the exchange is
                // abandoned as it is, without the last chunk, and the connection closed, so
                // the upstream sees an incomplete message rather than a shorter one.
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::ClientBody(e.into()))),
                Poll::Ready(Some(Ok(frame))) => {
                    self.took_body = true;
                    frame
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    if let Encoding::Length(n) = &mut self.encoding {
                        match n.checked_sub(data.len() as u64) {
                            // The declared length is complete: the body is done, whether
                            // or not its end was signalled yet (HTTP/2 may send END_STREAM
                            // in a frame of its own, after the upstream answered).
                            Some(0) => self.encoding = Encoding::Done,
                            Some(left) => *n = left,
                            None => {
                                return Poll::Ready(Err(Error::ClientBody(
                                    "the body is longer than its Content-Length".into(),
                                )))
                            }
                        }
                    }
                    self.stage_data(data, chunked);
                }
                Err(frame) => {
                    // Trailers can only travel in a chunked body; elsewhere they are dropped.
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        self.stage.extend_from_slice(b"0\r\n");
                        put_fields(&mut self.stage, &trailers);
                        self.stage.extend_from_slice(b"\r\n");
                        self.encoding = Encoding::Done;
                    }
                }
            }
        }
    }

    fn stage_data(&mut self, data: Bytes, chunked: bool) {
        if chunked {
            let _ = write!(self.stage, "{:x}\r\n", data.len());
        }
        if data.len() <= MAX_COPY {
            self.stage.extend_from_slice(&data);
            if chunked {
                self.stage.extend_from_slice(b"\r\n");
            }
        } else {
            self.data = Some(data);
            self.crlf_after_data = chunked;
        }
    }

    /// Writes and flushes everything staged; ready when nothing is left.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.written < self.stage.len() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.stage[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wrote_any = true;
                self.written += n;
                continue;
            }
            self.stage.clear();
            self.written = 0;
            let Some(data) = &mut self.data else {
                return Pin::new(&mut self.io).poll_flush(cx);
            };
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, data))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wrote_any = true;
            data.advance(n);
            if data.is_empty() {
                self.data = None;
                if std::mem::take(&mut self.crlf_after_data) {
                    self.stage.extend_from_slice(b"\r\n");
                }
            }
        }
    }

    /// Reads whatever is available into `rbuf`. `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < self.next_read / 2 {
            self.rbuf.reserve(self.next_read);
        }
        let room = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        self.next_read = if n >= room {
            (self.next_read * 2).min(MAX_READ)
        } else {
            MIN_READ
        };
        Poll::Ready(Ok(n))
    }

    /// Parses a complete final response head out of `rbuf`, skipping interim (1xx) ones.
    fn parse_head(
        &mut self,
        head_request: bool,
    ) -> Result<Option<(response::Parts, Framing)>, Error> {
        loop {
            if self.rbuf.is_empty() {
                return Ok(None);
            }
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let base = self.rbuf.as_ptr() as usize;
            let parsed = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, &self.rbuf, &mut slots);
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Err(Error::Protocol("response head too large"))
                }
                // httparse takes a bare LF for a line end; a proxy that did would let an
                // upstream's field value with an LF in it reach the client as a field of its
                // own (RFC 9112 §2.2 lets a recipient accept it; an intermediary must not).
                Ok(httparse::Status::Complete(len)) if !crlf_only(&self.rbuf[..len]) => {
                    return Err(Error::Protocol("bare LF in the response head"))
                }
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => {
                    if self.rbuf.len() > MAX_HEAD {
                        return Err(Error::Protocol("response head too large"));
                    }
                    return Ok(None);
                }
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Protocol("too many response header fields"))
                }
                Err(_) => return Err(Error::Protocol("malformed response head")),
            };
            let code = res.code.unwrap_or(0);
            let version = if res.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(Error::Protocol(
                        "101 Switching Protocols without an upgrade",
                    ));
                }
                self.rbuf.advance(len);
                continue;
            }
            let status =
                StatusCode::from_u16(code).map_err(|_| Error::Protocol("invalid status code"))?;
            self.fields.clear();
            for h in res.headers.iter() {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                self.fields.push(Field {
                    name: (name, name + h.name.len()),
                    value: (value, value + h.value.len()),
                });
            }
            let head = self.rbuf.split_to(len).freeze();
            let (headers, fields) = self.read_fields(&head)?;
            let framing = self.framing(status, version, &fields, head_request)?;
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            parts.version = version;
            parts.headers = headers;
            return Ok(Some((parts, framing)));
        }
    }

    /// Builds the header map from the parsed field positions, dropping hop-by-hop fields as
    /// it goes (RFC 9110 §7.6.1: `Connection` and what it lists, `Keep-Alive`, `TE` other
    /// than `trailers`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) and noting
    /// what the framing depends on, so no field is looked up or removed afterwards.
    fn read_fields(&self, head: &Bytes) -> Result<(HeaderMap, Fields), Error> {
        // Room for what the proxy adds (`Via`, the request id) without growing the map, and
        // for the client's next request head (see RESPONSE_MAP_FIELDS).
        let mut headers =
            HeaderMap::with_capacity((self.fields.len() + 4).max(RESPONSE_MAP_FIELDS));
        let mut fields = Fields::default();
        let mut listed = false;
        for f in &self.fields {
            let name = &head[f.name.0..f.name.1];
            let value = &head[f.value.0..f.value.1];
            match headers::hop(name) {
                Hop::Connection => {
                    fields.close |= has_token(value, b"close");
                    listed |= headers::connection_listed(value).next().is_some();
                    continue;
                }
                Hop::TransferEncoding => {
                    // The last coding of the last field decides.
                    fields.transfer_encoding = true;
                    fields.chunked = value
                        .rsplit(|&b| b == b',')
                        .next()
                        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                    continue;
                }
                Hop::Te if !value.eq_ignore_ascii_case(b"trailers") => continue,
                Hop::Upgrade | Hop::Drop => continue,
                Hop::Te | Hop::EndToEnd => {}
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                fields.content_length = fields.content_length.and(value);
            }
            let name = HeaderName::from_bytes(name)
                .map_err(|_| Error::Protocol("invalid header field name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(f.value.0..f.value.1))
                .map_err(|_| Error::Protocol("invalid header field value"))?;
            headers.append(name, value);
        }
        if listed {
            // Fields named by `Connection` are hop-by-hop too (rare: a second pass).
            for f in &self.fields {
                if headers::hop(&head[f.name.0..f.name.1]) == Hop::Connection {
                    for name in headers::connection_listed(&head[f.value.0..f.value.1]) {
                        headers.remove(name);
                    }
                }
            }
        }
        Ok((headers, fields))
    }

    /// Decides how the body is delimited (RFC 9112 §6.3) and whether the connection stays.
    fn framing(
        &mut self,
        status: StatusCode,
        version: Version,
        fields: &Fields,
        head_request: bool,
    ) -> Result<Framing, Error> {
        if version == Version::HTTP_10 || fields.close {
            self.reusable = false;
        }
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Framing::Empty);
        }
        if fields.transfer_encoding {
            if fields.content_length != Length::None {
                return Err(Error::Protocol("both Transfer-Encoding and Content-Length"));
            }
            if version == Version::HTTP_11 && fields.chunked {
                return Ok(Framing::Chunked(Chunk::Size));
            }
            self.reusable = false;
            return Ok(Framing::Close);
        }
        match fields.content_length {
            Length::Valid(0) => Ok(Framing::Empty),
            Length::Valid(n) => Ok(Framing::Length(n)),
            Length::Invalid => Err(Error::Protocol("invalid Content-Length")),
            Length::None => {
                self.reusable = false;
                Ok(Framing::Close)
            }
        }
    }

    /// The next frame of the response body. After the last one, `framing` is
    /// [`Framing::Empty`].
    pub fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let result = self.poll_body_inner(cx, framing);
        if let Poll::Ready(Some(Err(_))) = &result {
            self.reusable = false;
            *framing = Framing::Empty;
        }
        result
    }

    fn poll_body_inner(
        &mut self,
        cx: &mut Context<'_>,
        framing: &mut Framing,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match framing {
                Framing::Empty => return Poll::Ready(None),
                Framing::Length(left) => {
                    if let Some(data) = self.take_up_to(left) {
                        if *left == 0 {
                            *framing = Framing::Empty;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    if !self.rbuf.is_empty() {
                        let data = self.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(chunk) => match self.decode_chunked(chunk)? {
                    Decoded::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                    Decoded::End => {
                        *framing = Framing::Empty;
                        return Poll::Ready(None);
                    }
                    Decoded::Trailers(trailers) => {
                        *framing = Framing::Empty;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Decoded::More => {}
                },
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    if let Framing::Close = framing {
                        *framing = Framing::Empty;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
            }
        }
    }

    /// Takes what is buffered of the `left` bytes still to come, if anything is.
    fn take_up_to(&mut self, left: &mut u64) -> Option<Bytes> {
        if self.rbuf.is_empty() {
            return None;
        }
        let n = (*left).min(self.rbuf.len() as u64);
        *left -= n;
        Some(self.rbuf.split_to(n as usize).freeze())
    }

    /// Takes the whole remaining body if it is already buffered and delimited by length:
    /// the common small response, which then frees the connection at once.
    pub fn take_buffered(&mut self, framing: &mut Framing) -> Option<Bytes> {
        match *framing {
            Framing::Length(n) if n <= self.rbuf.len() as u64 => {
                *framing = Framing::Empty;
                Some(self.rbuf.split_to(n as usize).freeze())
            }
            _ => None,
        }
    }

    fn decode_chunked(&mut self, chunk: &mut Chunk) -> Result<Decoded, Error> {
        loop {
            match chunk {
                Chunk::Size => match chunk_size(&self.rbuf)? {
                    Some((used, size)) => {
                        self.rbuf.advance(used);
                        *chunk = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    None => return Ok(Decoded::More),
                },
                Chunk::Data(left) => {
                    let Some(data) = self.take_up_to(left) else {
                        return Ok(Decoded::More);
                    };
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                Chunk::DataEnd => {
                    if self.rbuf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &self.rbuf[..2] != b"\r\n" {
                        return Err(Error::Protocol("chunk data not followed by CRLF"));
                    }
                    self.rbuf.advance(2);
                    *chunk = Chunk::Size;
                }
                Chunk::Trailers => {
                    if self.rbuf.starts_with(b"\r\n") {
                        self.rbuf.advance(2);
                        return Ok(Decoded::End);
                    }

                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(&self.rbuf, &mut fields) {
                        Ok(httparse::Status::Complete((used, _)))
                            if !crlf_only(&self.rbuf[..used]) =>
                        {
                            return Err(Error::Protocol("bare LF in the trailer section"))
                        }
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields.iter().filter(|f| trailer_allowed(f.name.as_bytes())) {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| Error::Protocol("invalid trailer field name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| Error::Protocol("invalid trailer field value"))?;
                                trailers.append(name, value);
                            }
                            self.rbuf.advance(used);
                            return Ok(Decoded::Trailers(trailers));
                        }
                        Ok(httparse::Status::Partial) => {
                            if self.rbuf.len() > MAX_TRAILERS {
                                return Err(Error::Protocol("trailer section too large"));
                            }
                            return Ok(Decoded::More);
                        }
                        Err(_) => return Err(Error::Protocol("malformed trailer section")),
                    }
                }
            }
        }
    }
}

enum Decoded {
    Frame(Frame<Bytes>),
    Trailers(HeaderMap),
    End,
    /// More input is needed.
    More,
}

/// Whether every LF in `bytes` ends a CRLF.
fn crlf_only(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).all(|i| i > 0 && bytes[i - 1] == b'\r')
}

/// A chunk-size line (RFC 9112 §7.1): hex digits, extensions, CRLF; `None` until the line
/// is complete. Stricter than httparse's: an empty size, a bare LF or a size that does not
/// fit 64 bits is refused, never read as the last chunk.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_CHUNK_LINE)]) else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(Error::Protocol("chunk size line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(Error::Protocol("chunk size line without CRLF"));
    }
    let line = &buf[..lf - 1];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Error::Protocol("empty chunk size"));
    }
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > 16 {
        return Err(Error::Protocol("chunk size too large"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(d)
    });
    // Extensions: `;name[=value]`, after optional whitespace; ignored, but only visible
    // characters and whitespace, never a CR.
    let ext = &line[digits..];
    let ext_start = ext.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let ext = &ext[ext_start..];
    if !ext.is_empty()
        && (ext[0] != b';'
            || !ext
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        return Err(Error::Protocol("invalid chunk extension"));
    }
    Ok(Some((lf + 1, size)))
}

/// Whether a response trailer field may be passed on: nothing that frames, routes,
/// authenticates or describes the content (RFC 9110 §6.5.1), and nothing hop-by-hop.
fn trailer_allowed(name: &[u8]) -> bool {
    const REFUSED: &[&[u8]] = &[
        b"content-length",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"host",
        b"authorization",
        b"www-authenticate",
        b"proxy-authenticate",
        b"set-cookie",
        b"cookie",
        b"cache-control",
        b"expires",
        b"location",
        b"retry-after",
        b"vary",
        b"age",
        b"date",
    ];
    headers::hop(name) == Hop::EndToEnd && !REFUSED.iter().any(|r| name.eq_ignore_ascii_case(r))
}

/// Parses `input` as one complete response (head, then its body) the way an upstream
/// connection reads it, and returns the head and the body's frames; input that ends early
/// is an error. For fuzzing the parser.
pub fn parse_response_bytes(
    input: &[u8],
    head_request: bool,
) -> Result<(response::Parts, Vec<Bytes>), Error> {
    let mut conn = Conn::over(Exhausted);
    conn.rbuf.extend_from_slice(input);
    let Some((parts, mut framing)) = conn.parse_head(head_request)? else {
        return Err(Error::Closed);
    };
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = Vec::new();
    loop {
        match conn.poll_body(&mut cx, &mut framing) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    frames.push(data);
                }
            }
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(None) => return Ok((parts, frames)),
            Poll::Pending => return Err(Error::Closed),
        }
    }
}

/// A stream at its end that takes any write: what is left once the input is read.
#[derive(Debug)]
struct Exhausted;

impl AsyncRead for Exhausted {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Exhausted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The length the `Content-Length` fields of `headers` agree on.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    match headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .fold(Length::None, |l, v| l.and(v.as_bytes()))
    {
        Length::Valid(n) => Some(n),
        Length::None | Length::Invalid => None,
    }
}

/// Writes `name: value` lines.
fn put_fields(out: &mut Vec<u8>, fields: &HeaderMap) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether a comma-separated value lists `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn content_lengths_must_agree_and_be_plain_numbers() {
        assert_eq!(content_length(&map(&[("content-length", "42")])), Some(42));
        assert_eq!(content_length(&map(&[("content-length", "7, 7")])), Some(7));
        assert_eq!(
            content_length(&map(&[("content-length", "7"), ("content-length", "7")])),
            Some(7)
        );
        for bad in ["7, 8", "+7", "-1", "0x10", "", " ", "99999999999999999999"] {
            assert_eq!(
                content_length(&map(&[("content-length", bad)])),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(content_length(&map(&[])), None);
    }

    #[test]
    fn tokens_are_found_in_comma_separated_lists() {
        assert!(has_token(b"Close", b"close"));
        assert!(has_token(b"keep-alive, close", b"close"));
        assert!(!has_token(b"keep-alive", b"close"));
        assert!(!has_token(b"closed", b"close"));
        assert_eq!(Length::None.and(b" 12 "), Length::Valid(12));
        assert_eq!(Length::None.and(b"12,12"), Length::Valid(12));
        assert_eq!(Length::None.and(b"12,13"), Length::Invalid);
    }

    fn parse(input: &str) -> Result<(StatusCode, HeaderMap, Vec<u8>), Error> {
        parse_response_bytes(input.as_bytes(), false)
            .map(|(p, frames)| (p.status, p.headers, frames.concat()))
    }

    #[test]
    fn a_bare_lf_in_a_response_head_is_refused() {
        let smuggled = "HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: evil=1\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse(smuggled), Err(Error::Protocol(_))));
        let lf_only = "HTTP/1.1 200 OK\nContent-Length: 0\n\n";
        assert!(matches!(parse(lf_only), Err(Error::Protocol(_))));
        let (status, headers, body) =
            parse("HTTP/1.1 200 OK\r\nX-A: a\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!(status, 200);
        assert_eq!(headers["x-a"], "a");
        assert_eq!(body, b"hi");
    }

    #[test]
    fn chunk_size_lines_are_read_strictly() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let ok = |chunks: &str| parse(&format!("{head}{chunks}")).map(|(_, _, b)| b);
        assert_eq!(ok("5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(ok("5;ext=1\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(ok("005 ;a\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        for bad in [
            "\r\nhello\r\n0\r\n\r\n",              // empty size: not the last chunk
            "5\nhello\r\n0\r\n\r\n",               // bare LF
            "zz\r\nhello\r\n0\r\n\r\n",            // not hex
            "FFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n", // 17 digits
            "5 x\r\nhello\r\n0\r\n\r\n",           // junk after the size
            "5\r\nhelloXX0\r\n\r\n",               // no CRLF after the data
            "5\r\nhel",                            // cut short
        ] {
            assert!(ok(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn response_trailers_lose_framing_and_routing_fields() {
        let input = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     2\r\nhi\r\n0\r\nX-Checksum: 1\r\nContent-Length: 5\r\nHost: x\r\n\r\n";
        let mut conn = Conn::over(Exhausted);
        conn.rbuf.extend_from_slice(input.as_bytes());
        let (_, mut framing) = conn.parse_head(false).unwrap().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut trailers = None;
        while let Poll::Ready(Some(frame)) = conn.poll_body(&mut cx, &mut framing) {
            if let Ok(t) = frame.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-checksum"], "1");
        assert!(!trailers.contains_key("content-length"));
        assert!(!trailers.contains_key("host"));
    }

    #[test]
    fn failures_map_to_their_rejections() {
        assert_eq!(Error::Closed.kind(), ProxyError::UpstreamReset);
        assert_eq!(Error::Protocol("x").kind(), ProxyError::UpstreamProtocol);
        assert_eq!(
            Error::Io(io::ErrorKind::TimedOut.into()).kind(),
            ProxyError::UpstreamTimeout
        );
        assert!(matches!(
            Error::ClientBody("x".into()).kind(),
            ProxyError::BadRequest(_)
        ));
    }

    // Exchanges against a scripted upstream: the connection's IO is a script of reads
    // (each one arrives as a read of its own) and a record of what was written.

    /// One step of the upstream's side, as the connection reads it.
    enum Step {
        /// These bytes arrive (as one read, or several if the read buffer is smaller).
        Data(Vec<u8>),
        /// Nothing has arrived yet: the read waits once (the next step is a later read).
        Pause,
        /// The upstream closed the connection.
        Eof,
    }

    fn data(bytes: impl AsRef<[u8]>) -> Step {
        Step::Data(bytes.as_ref().to_vec())
    }

    /// A scripted upstream connection. With the script played out, reads wait forever
    /// (an open connection with nothing to say).
    #[derive(Default)]
    struct Scripted {
        reads: std::collections::VecDeque<Step>,
        written: Vec<u8>,
        /// Bytes taken before writes fail (the upstream closed its side), if limited.
        write_limit: Option<usize>,
    }

    impl Scripted {
        fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            Scripted {
                reads: steps.into_iter().collect(),
                ..Scripted::default()
            }
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.reads.pop_front() {
                None => Poll::Pending,
                Some(Step::Eof) => {
                    self.reads.push_front(Step::Eof);
                    Poll::Ready(Ok(()))
                }
                Some(Step::Pause) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Step::Data(mut bytes)) => {
                    let n = bytes.len().min(buf.remaining());
                    buf.put_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.reads.push_front(Step::Data(bytes.split_off(n)));
                    }
                    Poll::Ready(Ok(()))
                }
            }
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = match self.write_limit {
                Some(0) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(left) => buf.len().min(left),
                None => buf.len(),
            };
            if let Some(left) = &mut self.write_limit {
                *left -= n;
            }
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    type Full = http_body_util::Full<Bytes>;

    fn request(
        method: Method,
        path: &str,
        fields: &[(&'static str, &'static str)],
    ) -> request::Parts {
        let mut req = http::Request::builder().method(method).uri(path);
        for (n, v) in fields {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn get(path: &str) -> request::Parts {
        request(Method::GET, path, &[("host", "app")])
    }

    /// The whole response body: its data, and its trailers if it had any.
    async fn read_body(
        conn: &mut Conn<Scripted>,
        framing: &mut Framing,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), Error> {
        let mut body = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| conn.poll_body(cx, framing)).await {
            match frame?.into_data() {
                Ok(d) => body.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        Ok((body, trailers))
    }

    /// A GET on `conn`: its response head, body and trailers.
    async fn fetch(
        conn: &mut Conn<Scripted>,
        path: &str,
    ) -> Result<(response::Parts, Vec<u8>, Option<HeaderMap>), Error> {
        let (head, mut framing) = conn.exchange(&get(path), &mut Full::default()).await?;
        let (body, trailers) = read_body(conn, &mut framing).await?;
        Ok((head, body, trailers))
    }

    /// A chunked body decoded independently of the connection's decoder.
    fn dechunk(mut wire: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = wire.windows(2).position(|w| w == b"\r\n").unwrap();
            let line = std::str::from_utf8(&wire[..line_end]).unwrap();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
            wire = &wire[line_end + 2..];
            if size == 0 {
                assert_eq!(wire, b"\r\n", "no trailers, then the final CRLF");
                return body;
            }
            body.extend_from_slice(&wire[..size]);
            assert_eq!(&wire[size..size + 2], b"\r\n", "chunk data ends with CRLF");
            wire = &wire[size + 2..];
        }
    }

    #[tokio::test]
    async fn chunked_responses_with_extensions_and_trailers_are_decoded_and_reused() {
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n"),
            data("5;name=value\r\nhello\r\n"),
            Step::Pause,
            data("6\r\n wor"),
            Step::Pause,
            data("ld\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-digest: abc\r\n\r\n"),
            data("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"),
        ]));
        let (head, body, trailers) = fetch(&mut conn, "/chunked").await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(body, b"hello worldabcdefghijklmnopqrstuvwxyz");
        assert_eq!(trailers.expect("trailers")["x-digest"], "abc");
        assert!(!head.headers.contains_key("trailer"));
        assert!(
            conn.is_reusable(),
            "a fully read chunked body frees its connection"
        );
        let (head, body, _) = fetch(&mut conn, "/after").await.unwrap();
        assert_eq!((head.status.as_u16(), &body[..]), (200, &b"next"[..]));
        assert!(conn.is_reusable());
        let wire = String::from_utf8(conn.io.written.clone()).unwrap();
        assert_eq!(
            wire,
            "GET /chunked HTTP/1.1\r\nhost: app\r\n\r\nGET /after HTTP/1.1\r\nhost: app\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn heads_and_bodies_split_across_many_writes_arrive_whole() {
        let body: String = (0..50_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let full = format!(
            "HTTP/1.1 200 OK\r\nx-one: 1\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        // Status line, fields and body cut at awkward places.
        let cuts = [3, 9, 17, 30, 45, 200, 7_000, 30_000, full.len()];
        let mut steps = Vec::new();
        let mut at = 0;
        for cut in cuts {
            steps.push(data(&full.as_bytes()[at..cut]));
            steps.push(Step::Pause);
            at = cut;
        }
        let mut conn = Conn::over(Scripted::new(steps));
        let (head, got, _) = fetch(&mut conn, "/split").await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["x-one"], "1");
        assert_eq!(got, body.as_bytes());
        assert!(conn.is_reusable());
    }

    #[tokio::test]
    async fn close_delimited_bodies_are_read_to_the_end_and_not_reused() {
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil "),
            Step::Pause,
            data("the end"),
            Step::Eof,
        ]));
        let (head, body, _) = fetch(&mut conn, "/close").await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(body, b"until the end");
        assert!(
            !conn.is_reusable(),
            "a close-delimited body ends its connection"
        );
        // A `Transfer-Encoding` other than chunked is delimited by the close too.
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzipped"),
            Step::Eof,
        ]));
        let (_, body, _) = fetch(&mut conn, "/gzip").await.unwrap();
        assert_eq!(body, b"zipped");
        assert!(!conn.is_reusable());
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 100 Continue\r\n\r\n"),
            Step::Pause,
            data("HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"),
            data("HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\ncreated"),
        ]));
        let parts = request(Method::POST, "/inbox", &[("content-length", "2")]);
        let (head, mut framing) = conn
            .exchange(&parts, &mut Full::new(Bytes::from_static(b"{}")))
            .await
            .unwrap();
        let (body, _) = read_body(&mut conn, &mut framing).await.unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(body, b"created");
        assert!(!head.headers.contains_key("link"), "the hints stay behind");
        assert_eq!(
            conn.io.written, b"POST /inbox HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
            "a small body goes out in the head's write"
        );
        assert!(conn.is_reusable());
        // A 101 that nobody asked for is not an interim response.
        let mut conn = Conn::over(Scripted::new([data(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
        )]));
        assert!(matches!(
            fetch(&mut conn, "/").await,
            Err(Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn bodiless_responses_keep_their_length_header_and_connection() {
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"),
            data("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
            data("HTTP/1.1 204 No Content\r\n\r\n"),
        ]));
        let head_request = request(Method::HEAD, "/head", &[]);
        let (head, mut framing) = conn
            .exchange(&head_request, &mut Full::default())
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(
            head.headers["content-length"], "1234",
            "HEAD keeps the length of the GET"
        );
        assert!(framing.is_end());
        assert_eq!(framing.exact(), Some(0));
        assert!(read_body(&mut conn, &mut framing)
            .await
            .unwrap()
            .0
            .is_empty());
        assert!(conn.is_reusable());
        for status in [304, 204] {
            let (head, mut framing) = conn
                .exchange(&get("/"), &mut Full::default())
                .await
                .unwrap();
            assert_eq!(head.status, status);
            assert!(framing.is_end(), "{status}");
            assert!(read_body(&mut conn, &mut framing)
                .await
                .unwrap()
                .0
                .is_empty());
            assert!(conn.is_reusable(), "{status}");
        }
        assert_eq!(head_request.method, Method::HEAD);
    }

    #[tokio::test]
    async fn malformed_and_hostile_responses_are_refused() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(100 * 1024)
        );
        let many: String = (0..200).map(|i| format!("x-{i}: {i}\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}content-length: 0\r\n\r\n");
        for (name, response) in [
            (
                "both",
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
            ),
            ("lengths", "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!"),
            ("length", "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello"),
            ("status", "HTTP/1.1 2000 Way OK\r\ncontent-length: 0\r\n\r\n"),
            ("garbage", "this is not http\r\n\r\n"),
            ("huge", &huge),
            ("many", &many),
        ] {
            let mut conn = Conn::over(Scripted::new([data(response)]));
            let err = fetch(&mut conn, "/").await.unwrap_err();
            assert!(matches!(err, Error::Protocol(_)), "{name}: {err:?}");
            assert_eq!(err.kind(), ProxyError::UpstreamProtocol, "{name}");
            assert!(!conn.is_reusable(), "{name}");
        }
        // A bad chunk comes after the head: the body fails.
        let mut conn = Conn::over(Scripted::new([data(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )]));
        let (head, mut framing) = conn
            .exchange(&get("/chunk"), &mut Full::default())
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        let err = read_body(&mut conn, &mut framing).await.unwrap_err();
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
        assert!(framing.is_end());
        assert!(
            !conn.is_reusable(),
            "a broken chunked body ends its connection"
        );
        // Closed without an answer: a reset, not a protocol error.
        let mut conn = Conn::over(Scripted::new([Step::Eof]));
        let err = fetch(&mut conn, "/silent").await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err:?}");
        assert_eq!(err.kind(), ProxyError::UpstreamReset);
        assert!(conn.may_retry(&err, &Method::GET, false));
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_fails() {
        let mut conn = Conn::over(Scripted::new([
            data("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly forty bytes of the hundred promised"),
            Step::Eof,
        ]));
        let (head, mut framing) = conn
            .exchange(&get("/short"), &mut Full::default())
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(framing.exact(), Some(100));
        let frame = poll_fn(|cx| conn.poll_body(cx, &mut framing)).await;
        assert_eq!(
            frame.unwrap().unwrap().into_data().unwrap().len(),
            40,
            "what arrived is relayed"
        );
        let end = poll_fn(|cx| conn.poll_body(cx, &mut framing)).await;
        assert!(matches!(end, Some(Err(Error::Closed))), "{end:?}");
        assert!(!conn.is_reusable());
    }

    #[tokio::test]
    async fn bodies_of_unknown_length_go_upstream_chunked() {
        let parts: Vec<Bytes> = (0..20u8)
            .map(|i| Bytes::from(vec![b'a' + i; 5_000 + usize::from(i) * 1_000]))
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let frames = futures_util::stream::iter(
            parts
                .into_iter()
                .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))),
        );
        let mut body = http_body_util::StreamBody::new(frames);
        let mut conn = Conn::over(Scripted::new([data(
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ngot it",
        )]));
        let (head, mut framing) = conn
            .exchange(&request(Method::POST, "/upload", &[]), &mut body)
            .await
            .unwrap();
        let (got, _) = read_body(&mut conn, &mut framing).await.unwrap();
        assert_eq!((head.status.as_u16(), &got[..]), (200, &b"got it"[..]));
        assert!(conn.wrote_request());
        let wire = &conn.io.written;
        let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&wire[..end]).to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(dechunk(&wire[end..]), expected);

        // A body that knows its length goes with it; the client's own length is kept.
        let mut conn = Conn::over(Scripted::new([data(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        )]));
        let mut known = Full::new(Bytes::from_static(b"hello"));
        conn.exchange(&request(Method::PUT, "/", &[]), &mut known)
            .await
            .unwrap();
        assert_eq!(
            conn.io.written,
            b"PUT / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_read_ends_the_exchange() {
        let mut conn = Conn::over(Scripted {
            // The upstream takes the head and a little of the body, then closes.
            write_limit: Some(16 * 1024),
            ..Scripted::new([data(
                "HTTP/1.1 413 Content Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large",
            )])
        });
        let parts = request(Method::POST, "/early", &[("content-length", "262144")]);
        let mut body = Full::new(Bytes::from(vec![b'x'; 256 * 1024]));
        let (head, mut framing) = conn.exchange(&parts, &mut body).await.unwrap();
        assert_eq!(head.status, 413);
        assert!(!conn.wrote_request(), "the rest of the body is not sent");
        let (got, _) = read_body(&mut conn, &mut framing).await.unwrap();
        assert_eq!(got, b"too large");
        assert!(
            !conn.is_reusable(),
            "the connection that answered early is not reused"
        );
    }

    #[tokio::test]
    async fn hop_by_hop_response_fields_stay_on_the_upstream_connection() {
        let mut conn = Conn::over(Scripted::new([data(concat!(
            "HTTP/1.1 200 OK\r\n",
            "Connection: keep-alive, X-Hop, Date\r\n",
            "Keep-Alive: timeout=5\r\n",
            "X-Hop: secret\r\n",
            "Proxy-Authenticate: Basic\r\n",
            "Trailer: x-digest\r\n",
            "Upgrade: h2c\r\n",
            "Date: Mon, 23 Nov 2026 10:00:00 GMT\r\n",
            "X-End: kept\r\n",
            "Transfer-Encoding: chunked\r\n",
            "\r\n",
            "4\r\nbody\r\n0\r\n\r\n",
        ))]));
        let (head, body, _) = fetch(&mut conn, "/hops").await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(body, b"body");
        for gone in [
            "connection",
            "keep-alive",
            "x-hop",
            "proxy-authenticate",
            "trailer",
            "upgrade",
            "transfer-encoding",
        ] {
            assert!(head.headers.get(gone).is_none(), "{gone} was passed on");
        }
        assert_eq!(head.headers["x-end"], "kept");
        assert_eq!(
            head.headers["date"], "Mon, 23 Nov 2026 10:00:00 GMT",
            "a Connection option cannot strip what signatures cover"
        );
        assert!(conn.is_reusable(), "no `close`: the connection stays");
    }

    #[tokio::test]
    async fn idle_connections_are_usable_until_the_upstream_closes_or_speaks() {
        let mut open = Conn::over(Scripted::default());
        assert!(open.is_usable());
        let mut closed = Conn::over(Scripted::new([Step::Eof]));
        assert!(!closed.is_usable());
        assert!(!closed.is_reusable());
        let mut stray = Conn::over(Scripted::new([data("HTTP/1.1 200 OK\r\n")]));
        assert!(!stray.is_usable());
        // A connection that closed on a request it was sent may see that request again
        // only when nothing can be repeated twice.
        let mut conn = Conn::over(Scripted::new([Step::Eof]));
        let parts = request(Method::POST, "/", &[]);
        let err = conn
            .exchange(&parts, &mut Full::new(Bytes::from_static(b"x")))
            .await
            .unwrap_err();
        assert!(!conn.may_retry(&err, &Method::POST, true));
        let mut conn = Conn::over(Scripted::new([Step::Eof]));
        let parts = request(Method::DELETE, "/", &[]);
        let err = conn
            .exchange(&parts, &mut Full::default())
            .await
            .unwrap_err();
        assert!(conn.may_retry(&err, &Method::DELETE, false));
        assert!(!conn.may_retry(&err, &Method::POST, false));
    }
}
