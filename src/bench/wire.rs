//! HTTP/1.1 framing for the bench's lean ends, the sink and the ceiling's client: a
//! request or response is found in a read buffer (head parsed by `httparse`, body by
//! `Content-Length`), and nothing more is read from it than the caller asks for. Chunked
//! bodies are refused: a node, and every client the bench compares, sends a length.

/// Header slots per message; more headers are refused.
const MAX_HEADERS: usize = 64;
/// The largest head accepted; a longer one without its blank line is refused.
pub const MAX_HEAD: usize = 64 << 10;
/// The largest body accepted.
pub const MAX_BODY: usize = 16 << 20;

/// A request found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// Bytes of the buffer the request takes, head and body.
    pub len: usize,
    /// The client asked to close the connection after the answer.
    pub close: bool,
}

/// A response found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Bytes of the buffer the response takes, head and body.
    pub len: usize,
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed<T> {
    /// A whole message.
    Complete(T),
    /// The start of one: read more.
    Partial,
    /// Not a message this side reads; the connection is to be closed.
    Invalid(&'static str),
}

/// The request at the start of `buf`.
pub fn request(buf: &[u8]) -> Framed<Request<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return partial(buf),
        Err(_) => return Framed::Invalid("malformed request head"),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Framed::Invalid("malformed request head");
    };
    let body_len = match body_length(parsed.headers) {
        Ok(n) => n,
        Err(why) => return Framed::Invalid(why),
    };
    let close = parsed.version == Some(0)
        || parsed
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("connection") && h.value == b"close");
    match buf.get(head..head + body_len) {
        Some(body) => Framed::Complete(Request {
            method,
            target,
            body,
            len: head + body_len,
            close,
        }),
        None => Framed::Partial,
    }
}

/// The response at the start of `buf`.
pub fn response(buf: &[u8]) -> Framed<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return partial(buf),
        Err(_) => return Framed::Invalid("malformed response head"),
    };
    let Some(status) = parsed.code else {
        return Framed::Invalid("malformed response head");
    };
    let body_len = match body_length(parsed.headers) {
        Ok(n) => n,
        Err(why) => return Framed::Invalid(why),
    };
    match buf.len() >= head + body_len {
        true => Framed::Complete(Response {
            status,
            len: head + body_len,
        }),
        false => Framed::Partial,
    }
}

fn partial<T>(buf: &[u8]) -> Framed<T> {
    match buf.len() > MAX_HEAD {
        true => Framed::Invalid("request head too large"),
        false => Framed::Partial,
    }
}

/// The `Content-Length` of a message (0 without one).
fn body_length(headers: &[httparse::Header<'_>]) -> Result<usize, &'static str> {
    let mut length = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not read");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-lengths");
            }
            length = Some(n);
        }
    }
    match length.unwrap_or(0) {
        n if n > MAX_BODY => Err("body too large"),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &[u8] = b"POST /s/7 HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n{\"seq\": 12}";

    #[test]
    fn a_request_is_framed_by_its_length_and_pipelined_ones_follow() {
        let mut two = POST.to_vec();
        two.extend_from_slice(b"GET /s/1?echo=a HTTP/1.1\r\nconnection: close\r\n\r\n");
        let Framed::Complete(first) = request(&two) else {
            panic!("not framed")
        };
        assert_eq!(
            (
                first.method,
                first.target,
                first.body,
                first.len,
                first.close
            ),
            ("POST", "/s/7", &b"{\"seq\": 12}"[..], POST.len(), false)
        );
        let Framed::Complete(second) = request(&two[first.len..]) else {
            panic!("not framed")
        };
        assert_eq!((second.method, second.target), ("GET", "/s/1?echo=a"));
        assert!(second.body.is_empty() && second.close);
    }

    #[test]
    fn a_cut_request_is_partial_at_every_length() {
        for cut in 0..POST.len() {
            assert_eq!(request(&POST[..cut]), Framed::Partial, "cut at {cut}");
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let cases: [&[u8]; 5] = [
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 99999999999\r\n\r\n",
            b"\x01\x02 nonsense\r\n\r\n",
        ];
        for case in cases {
            assert!(matches!(request(case), Framed::Invalid(_)), "{case:?}");
        }
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert!(matches!(request(&endless), Framed::Invalid(_)));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(request(&many), Framed::Invalid(_)));
    }

    #[test]
    fn responses_are_framed_by_their_length() {
        let first: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let second: &[u8] = b"HTTP/1.1 503 x\r\n\r\n";
        let both = [first, second].concat();
        let framed = |status, len| Framed::Complete(Response { status, len });
        assert_eq!(response(&both), framed(200, first.len()));
        assert_eq!(response(&both[first.len()..]), framed(503, second.len()));
        assert_eq!(response(&first[..first.len() - 1]), Framed::Partial);
    }
}
