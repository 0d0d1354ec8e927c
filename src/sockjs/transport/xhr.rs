//! xhr polling, xhr streaming and xhr send (sockjs.md §5.1–§5.3).

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};

use super::{
    Framing, body_error_response, deliver_send_body, read_body, serve_receiver, stream_response,
};
use crate::sockjs::http::{
    APPLICATION_JAVASCRIPT, Body, HttpRequest, HttpResponse, TEXT_PLAIN, set_cors, set_jsessionid,
    set_no_cache,
};
use crate::sockjs::{Client, Service};

/// `POST P/S/I/xhr`: one frame, then the response ends. The request body is ignored.
pub async fn poll(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let resp = headers(svc, &req, stream_response(APPLICATION_JAVASCRIPT));
    serve_receiver(svc, &req, sid, client, Framing::XhrPolling, resp).await
}

/// `POST P/S/I/xhr_streaming`: a 2049-byte prelude, then frames until the response limit.
pub async fn streaming(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let mut resp = headers(svc, &req, stream_response(APPLICATION_JAVASCRIPT));
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    serve_receiver(svc, &req, sid, client, Framing::XhrStreaming, resp).await
}

/// `POST P/S/I/xhr_send`: deliver a JSON array of messages; 204 on success.
pub async fn send(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let req_headers = req.headers().clone();
    let result = match read_body(req, svc.config().max_inbound_bytes).await {
        Ok(body) => deliver_send_body(svc, sid, client, &body).await,
        Err(e) => Err(body_error_response(e)),
    };
    let resp = result.map_or_else(
        |err| err,
        |()| {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
            set_no_cache(resp.headers_mut());
            resp
        },
    );
    let mut resp = resp;
    set_cors(&req_headers, resp.headers_mut());
    if svc.config().cookie_needed {
        set_jsessionid(&req_headers, resp.headers_mut());
    }
    resp
}

/// CORS and JSESSIONID for the xhr receivers.
fn headers<B>(svc: &Service, req: &Request<B>, mut resp: HttpResponse) -> HttpResponse {
    set_cors(req.headers(), resp.headers_mut());
    if svc.config().cookie_needed {
        set_jsessionid(req.headers(), resp.headers_mut());
    }
    resp
}
