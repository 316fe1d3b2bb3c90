//! Fuzz target: an upstream's HTTP/1.1 response, its head and then its body (length
//! delimited, chunked, or up to the end), as `fedgate::h1` reads it from the connection.
//! The first byte says whether the request was a HEAD; the rest is the response.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = fedgate_fuzz::budget(data);
    if data.len() > fedgate::fuzzing::MAX_INPUT {
        return;
    }
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let Ok((parts, frames)) = fedgate::h1::parse_response_bytes(input, head_request) else {
        return;
    };
    let body: usize = frames.iter().map(|f| f.len()).sum();
    // The body is decoded out of the input: it cannot be longer.
    assert!(
        body <= input.len(),
        "{body} body bytes out of {} input bytes",
        input.len()
    );
    // RFC 9112 6.3: no body after a HEAD request, nor in a 204 or 304.
    if head_request || matches!(parts.status.as_u16(), 204 | 304) {
        assert_eq!(
            body, 0,
            "a body on a {} response (HEAD: {head_request})",
            parts.status
        );
    }
});
