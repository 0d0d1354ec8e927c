//! EventSource (sockjs.md §5.4). sockjs-client runs `decodeURI` on every event, so `%`, CR,
//! LF and NUL are percent-escaped in the data line (§13.11).

use std::sync::Arc;

use http::HeaderValue;

use super::{Framing, serve_receiver, stream_response};
use crate::sockjs::http::{HttpRequest, HttpResponse, TEXT_EVENT_STREAM, set_cors, set_jsessionid};
use crate::sockjs::{Client, Service};

/// `GET P/S/I/eventsource`.
pub async fn eventsource(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let mut resp = stream_response(TEXT_EVENT_STREAM);
    set_cors(req.headers(), resp.headers_mut());
    if svc.config().cookie_needed {
        set_jsessionid(req.headers(), resp.headers_mut());
    }
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    serve_receiver(svc, &req, sid, client, Framing::EventSource, resp).await
}
