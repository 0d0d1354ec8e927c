//! JSONP polling and JSONP send (sockjs.md §5.6, §5.7). No CORS: script tags and form posts
//! do not need it.

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header};

use super::htmlfile::{callback, with_cookie};
use super::{
    Framing, body_error_response, deliver_send_body, read_body, serve_receiver, stream_response,
};
use crate::sockjs::frame::DecodeError;
use crate::sockjs::http::{
    APPLICATION_JAVASCRIPT, HttpRequest, HttpResponse, TEXT_PLAIN, response, server_error,
    set_no_cache,
};
use crate::sockjs::{Client, Service};

/// `GET P/S/I/jsonp?c=callback`: one `/**/cb("frame");` then the response ends.
pub async fn poll(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let callback = match callback(req.uri().query()) {
        Ok(cb) => cb,
        Err(message) => return with_cookie(svc, &req, server_error(message)),
    };
    let mut resp = with_cookie(svc, &req, stream_response(APPLICATION_JAVASCRIPT));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    serve_receiver(svc, &req, sid, client, Framing::Jsonp(callback), resp).await
}

/// `POST P/S/I/jsonp_send`: a form field `d` or a raw body holding a JSON array.
pub async fn send(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    let req_headers = req.headers().clone();
    let cookie = |resp: HttpResponse| {
        let mut resp = resp;
        if svc.config().cookie_needed {
            crate::sockjs::http::set_jsessionid(&req_headers, resp.headers_mut());
        }
        resp
    };
    let body = match read_body(req, svc.config().max_inbound_bytes).await {
        Ok(body) => body,
        Err(e) => return cookie(body_error_response(e)),
    };
    let payload = if is_form {
        match form_field(&body, "d") {
            Some(d) if !d.is_empty() => d,
            _ => return cookie(server_error(&DecodeError::PayloadExpected.to_string())),
        }
    } else {
        body.to_vec()
    };
    if let Err(resp) = deliver_send_body(svc, sid, client, &payload).await {
        return cookie(resp);
    }
    let mut resp = response(StatusCode::OK, TEXT_PLAIN, "ok");
    set_no_cache(resp.headers_mut());
    cookie(resp)
}

/// The form-decoded value of field `name` in an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        (k == name.as_bytes()).then(|| {
            let spaced: Vec<u8> = v
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            percent_encoding::percent_decode(&spaced).collect()
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_fields_are_percent_decoded() {
        assert_eq!(
            super::form_field(b"d=%5B%22abc%22%5D", "d"),
            Some(b"[\"abc\"]".to_vec())
        );
        assert_eq!(super::form_field(b"p=p", "d"), None);
        assert_eq!(super::form_field(b"d=", "d"), Some(vec![]));
    }
}
