//! The outbound HTTP client of one backend: JSON POSTs over pooled keep-alive connections
//! (hyper's client), each bounded in time and in the size of its answer.
//!
//! Every failure is turned into a [`BackendError`] whose text says what happened and which
//! key bounds it, because that text reaches the client's ERROR frame. So it names the backend
//! by its table (`backend[0]`), never by its URL, and quotes an answer's body only for a 4xx
//! (the backend's reason for refusing); a 5xx body, perhaps a stack trace, is only logged.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::stomp::BackendError;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// How much of an error answer's body is quoted in error texts.
const QUOTED_BYTES: usize = 200;

/// An answer of any status, its body read (at most `max_response_bytes`).
#[derive(Debug)]
pub(crate) struct Answer {
    /// The status.
    pub(crate) status: StatusCode,
    /// The body.
    pub(crate) body: Bytes,
}

impl Answer {
    /// The body of a 2xx answer; any other status is an error.
    pub(crate) fn accepted(self, client: &HttpClient) -> Result<Bytes, BackendError> {
        let (name, status) = (&client.name, self.status);
        match status.as_u16() {
            200..=299 => Ok(self.body),
            400..=499 => Err(BackendError::Rejected(format!(
                "{name} answered {status}{}",
                quote(&self.body)
            ))),
            500..=599 => {
                tracing::debug!(backend = %name, url = %client.url, %status, body = %String::from_utf8_lossy(&self.body[..self.body.len().min(QUOTED_BYTES)]), "backend failed");
                Err(BackendError::Unavailable(format!(
                    "{name} answered {status}"
                )))
            }
            _ => Err(BackendError::Invalid(format!(
                "{name} answered {status}; a backend answers 200 or 204"
            ))),
        }
    }

    /// The start of the body as text, for a refusal's reason.
    pub(crate) fn reason(&self) -> String {
        let end = self.body.len().min(QUOTED_BYTES);
        String::from_utf8_lossy(&self.body[..end]).trim().to_owned()
    }
}

/// One backend's HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    /// The backend's name in error texts: its table, `backend[0]`.
    name: String,
    /// The URL, for logs (the main one; hooks pass theirs per request).
    url: String,
    /// The pooled hyper client.
    inner: Client<HttpConnector, Full<Bytes>>,
    /// The bound on one request, connect to last byte.
    timeout: Duration,
    /// The largest answer body accepted.
    max_response_bytes: usize,
    /// Headers sent with every request (content type, user agent, configured ones).
    headers: HeaderMap,
}

impl HttpClient {
    /// A client named `name` (logged with `url`) keeping up to `max_idle` idle connections,
    /// with the configured `headers` (validated at config load).
    pub(crate) fn new(
        name: String,
        url: String,
        timeout: Duration,
        max_response_bytes: usize,
        max_idle: usize,
        extra_headers: &std::collections::BTreeMap<String, String>,
    ) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(max_idle)
            .build(connector);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("sockjs-gateway/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in extra_headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        HttpClient {
            name,
            url,
            inner,
            timeout,
            max_response_bytes,
            headers,
        }
    }

    /// The backend's name in error texts.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// POST `body` (JSON) to `url` and read the answer, whatever its status; a failure to get
    /// one at all is an error.
    pub(crate) async fn post(&self, url: &Uri, body: Bytes) -> Result<Answer, BackendError> {
        let limit_ms = self.timeout.as_millis();
        let name = &self.name;
        match tokio::time::timeout(self.timeout, self.exchange(url, body)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Unavailable(format!(
                "{name} did not answer within {limit_ms} ms (timeout_ms)"
            ))),
        }
    }

    async fn exchange(&self, url: &Uri, body: Bytes) -> Result<Answer, BackendError> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = url.clone();
        *request.headers_mut() = self.headers.clone();
        let name = &self.name;
        let response = self.inner.request(request).await.map_err(|e| {
            tracing::debug!(backend = %name, %url, error = %describe(&e), "backend unreachable");
            BackendError::Unavailable(format!("cannot reach {name}: {}", describe(&e)))
        })?;
        let status = response.status();
        let body = match Limited::new(response.into_body(), self.max_response_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(BackendError::Invalid(format!(
                    "{name} answered more than {} bytes (max_response_bytes)",
                    self.max_response_bytes
                )));
            }
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "{name}: the answer broke off: {e}"
                )));
            }
        };
        Ok(Answer { status, body })
    }
}

/// The start of an error answer's body, for error texts (empty when there is none).
fn quote(body: &[u8]) -> String {
    if body.is_empty() {
        return String::new();
    }
    let end = body.len().min(QUOTED_BYTES);
    let text = String::from_utf8_lossy(&body[..end]);
    let more = if body.len() > end { "..." } else { "" };
    format!(": {}{more}", text.trim())
}

/// A client error's innermost cause ("Connection refused (os error 111)"), which is what a
/// reader needs; hyper's outer texts say only "client error (Connect)".
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_short_and_trimmed() {
        assert_eq!(quote(b""), "");
        assert_eq!(quote(b" no such route\n"), ": no such route");
        let long = vec![b'x'; 500];
        assert!(quote(&long).ends_with("x..."));
        assert_eq!(quote(&long).len(), 2 + QUOTED_BYTES + 3);
    }
}
