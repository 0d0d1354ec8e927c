//! The iframe page (sockjs.md §2.3) that iframe-based transports load from the server's
//! origin. It is rendered once per service; its ETag is the MD5 of the body.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use md5::{Digest, Md5};

use super::http::{Body, HttpResponse, TEXT_HTML, response, set_cache_one_year};

const TEMPLATE: &str = r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="{{ sockjs_url }}"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>
"#;

/// The rendered page and its ETag.
pub struct IframePage {
    /// The page with `sockjs_url` filled in.
    body: Bytes,
    /// `"<hex md5 of body>"`, quoted.
    etag: HeaderValue,
}

impl IframePage {
    /// Render the page for a `sockjs_url` (validated by the config to hold no quotes).
    pub fn new(sockjs_url: &str) -> Self {
        let body = TEMPLATE.replace("{{ sockjs_url }}", sockjs_url);
        let digest = Md5::digest(body.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        IframePage {
            body: Bytes::from(body),
            etag,
        }
    }

    /// 200 with the page, or 304 when `If-None-Match` names the current ETag.
    pub fn respond(&self, req: &HeaderMap) -> HttpResponse {
        if req.get(header::IF_NONE_MATCH) == Some(&self.etag) {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return resp;
        }
        let mut resp = response(StatusCode::OK, TEXT_HTML, self.body.clone());
        set_cache_one_year(resp.headers_mut());
        resp.headers_mut().insert(header::ETAG, self.etag.clone());
        resp
    }
}
