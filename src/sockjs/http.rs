//! HTTP helpers shared by every SockJS handler: the request and response body types, CORS
//! (§8.1), caching (§8.3), JSESSIONID (§7), and the plain 404/405/500 answers (§1.3).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};

/// The body of a request as handlers see it: hyper's for the requests hyper parsed; for the
/// requests the gateway's own HTTP front served (`crate::front`), none or a small body it read
/// whole.
pub enum RequestBody {
    /// A body hyper is reading.
    Hyper(hyper::body::Incoming),
    /// A (small) body the front read whole; None once taken.
    Full(Option<Bytes>),
    /// No body.
    Empty,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(body) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(body) => body.size_hint(),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// The request type of every handler.
pub type HttpRequest = Request<RequestBody>;

/// Every response body the gateway sends: a fixed buffer, or a receiver streaming a
/// session's frames. Each streamed `Bytes` becomes exactly one HTTP chunk (§13.3).
pub enum Body {
    /// A fixed body, sent with `Content-Length`.
    Full(Option<Bytes>),
    /// A receiver; dropping it before its end (client gone) is how it learns of an abort.
    Receiver(Box<dyn StreamedBody>),
}

/// A body streamed one chunk per frame: what a receiving transport hands over (boxed, so
/// this module does not depend on the transports that build one).
pub trait StreamedBody:
    http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static
{
}

impl<T> StreamedBody for T where
    T: http_body::Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static
{
}

impl Body {
    /// An empty fixed body.
    pub fn empty() -> Self {
        Body::Full(None)
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Receiver(receiver) => Pin::new(&mut **receiver).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Receiver(receiver) => receiver.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Receiver(_) => SizeHint::default(),
        }
    }
}

/// Shared by a connection's writer and the requests it serves (as a request extension): how
/// long one write may stay blocked on a client that does not read before the connection is
/// dropped, and whether the writer dropped it for that reason. A service sets the limit to
/// its `send_time_limit`; a receiver or WebSocket whose writer stalled ends its session with
/// 4500.
#[derive(Debug)]
pub struct WriteWatch {
    /// The limit in milliseconds.
    limit_ms: AtomicU64,
    /// Set when a write was abandoned because it stayed blocked past the limit.
    stalled: AtomicBool,
}

impl WriteWatch {
    /// A watch with a starting limit.
    pub fn new(limit: Duration) -> Arc<Self> {
        let watch = Arc::new(WriteWatch {
            limit_ms: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
        });
        watch.set_limit(limit);
        watch
    }

    /// Change the limit.
    pub fn set_limit(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.limit_ms.store(ms, Ordering::Relaxed);
    }

    /// The current limit.
    pub fn limit(&self) -> Duration {
        Duration::from_millis(self.limit_ms.load(Ordering::Relaxed))
    }

    /// Record that a write was abandoned for staying blocked past the limit.
    pub fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    /// Whether a write was abandoned for staying blocked past the limit.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// The response type of every handler.
pub type HttpResponse = Response<Body>;

pub const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
pub const APPLICATION_JAVASCRIPT: &str = "application/javascript; charset=UTF-8";
pub const APPLICATION_JSON: &str = "application/json; charset=UTF-8";
pub const TEXT_HTML: &str = "text/html; charset=UTF-8";
pub const TEXT_EVENT_STREAM: &str = "text/event-stream";
const NO_CACHE: &str = "no-store, no-cache, no-transform, must-revalidate, max-age=0";
const ONE_YEAR: Duration = Duration::from_secs(31_536_000);

/// A response with a status, a content type and a fixed body.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// 404 with a plain-text body.
pub fn not_found() -> HttpResponse {
    response(
        StatusCode::NOT_FOUND,
        TEXT_PLAIN,
        "404 Error: Page not found\n",
    )
}

/// 405: `Allow`, no content type, an empty body with `Content-Length: 0`.
pub fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// A 500 with one of the protocol's error texts, uncacheable.
pub fn server_error(message: &str) -> HttpResponse {
    let mut resp = response(
        StatusCode::INTERNAL_SERVER_ERROR,
        TEXT_PLAIN,
        Bytes::copy_from_slice(message.as_bytes()),
    );
    set_no_cache(resp.headers_mut());
    resp
}

/// The no-cache header of §8.3.
pub fn set_no_cache(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
}

/// One-year caching with `Expires` (iframe and preflights).
pub fn set_cache_one_year(headers: &mut HeaderMap) {
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    let expires = httpdate::fmt_http_date(SystemTime::now() + ONE_YEAR);
    if let Ok(v) = HeaderValue::from_str(&expires) {
        headers.insert(header::EXPIRES, v);
    }
}

/// The CORS rule of §8.1: echo `Origin` with credentials, else `*`; echo
/// `Access-Control-Request-Headers` when non-empty; always `Vary: Origin`.
pub fn set_cors(req: &HeaderMap, headers: &mut HeaderMap) {
    match req.get(header::ORIGIN) {
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        None => {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(acrh) = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace))
    {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, acrh.clone());
    }
}

/// A CORS preflight answer (§8.2).
pub fn preflight(req: &HeaderMap, methods: &'static str) -> HttpResponse {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    set_cors(req, h);
    set_cache_one_year(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("31536000"),
    );
    resp
}

pub use crate::auth::cookie;

/// `Set-Cookie: JSESSIONID=<value or dummy>; path=/` (§7).
pub fn set_jsessionid(req: &HeaderMap, headers: &mut HeaderMap) {
    let value = cookie(req, "JSESSIONID")
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        })
        .unwrap_or("dummy");
    if let Ok(v) = HeaderValue::from_str(&format!("JSESSIONID={value}; path=/")) {
        headers.insert(header::SET_COOKIE, v);
    }
}

/// Insert a header whose value is known to be valid.
pub fn insert_static(headers: &mut HeaderMap, name: HeaderName, value: &'static str) {
    headers.insert(name, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_echoes_origin_with_credentials() {
        let mut req = HeaderMap::new();
        req.insert(header::ORIGIN, HeaderValue::from_static("null"));
        let mut h = HeaderMap::new();
        set_cors(&req, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "null");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::VARY], "Origin");
    }

    #[test]
    fn cors_without_origin_is_a_star_without_credentials() {
        let mut h = HeaderMap::new();
        let mut req = HeaderMap::new();
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static(""),
        );
        set_cors(&req, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).is_none());
    }

    #[test]
    fn jsessionid_reuses_the_request_cookie() {
        let mut req = HeaderMap::new();
        req.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; JSESSIONID=abcdef"),
        );
        let mut h = HeaderMap::new();
        set_jsessionid(&req, &mut h);
        assert_eq!(h[header::SET_COOKIE], "JSESSIONID=abcdef; path=/");
        let mut h = HeaderMap::new();
        set_jsessionid(&HeaderMap::new(), &mut h);
        assert_eq!(h[header::SET_COOKIE], "JSESSIONID=dummy; path=/");
    }
}
