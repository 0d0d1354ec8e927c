//! htmlfile (sockjs.md §5.5): a forever-loading HTML page whose script chunks call the
//! parent's callback. `<` inside frames is escaped so `</script>` cannot end a chunk early.

use std::sync::Arc;

use http::{HeaderValue, Request};

use super::{Framing, serve_receiver, stream_response};
use crate::sockjs::http::{HttpRequest, HttpResponse, TEXT_HTML, server_error, set_jsessionid};
use crate::sockjs::{Client, Service};

/// `GET P/S/I/htmlfile?c=callback`.
pub async fn htmlfile(
    svc: &Arc<Service>,
    req: HttpRequest,
    sid: &str,
    client: &Client,
) -> HttpResponse {
    let callback = match callback(req.uri().query()) {
        Ok(cb) => cb,
        Err(message) => return with_cookie(svc, &req, server_error(message)),
    };
    let mut resp = with_cookie(svc, &req, stream_response(TEXT_HTML));
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    serve_receiver(svc, &req, sid, client, Framing::HtmlFile(callback), resp).await
}

/// Set JSESSIONID when the service needs it (transport responses, errors included).
pub fn with_cookie<B>(svc: &Service, req: &Request<B>, mut resp: HttpResponse) -> HttpResponse {
    if svc.config().cookie_needed {
        set_jsessionid(req.headers(), resp.headers_mut());
    }
    resp
}

/// The URL-decoded `c` (or `callback`) query parameter, validated (§5.10).
pub fn callback(query: Option<&str>) -> Result<String, &'static str> {
    let pairs: Vec<(&str, &str)> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .collect();
    let raw = pairs
        .iter()
        .find(|(k, _)| *k == "c")
        .or_else(|| pairs.iter().find(|(k, _)| *k == "callback"))
        .map(|(_, v)| *v)
        .ok_or("\"callback\" parameter required")?;
    let plus_as_space = raw.replace('+', " ");
    let decoded = percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .map_err(|_| "invalid \"callback\" parameter")?;
    let valid = !decoded.is_empty()
        && decoded.len() <= 32
        && decoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid {
        Ok(decoded.into_owned())
    } else {
        Err("invalid \"callback\" parameter")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_decoded_then_validated() {
        assert_eq!(callback(Some("c=%63allback")), Ok("callback".into()));
        assert_eq!(
            callback(Some("t=1&callback=_jp.a1b2c3d")),
            Ok("_jp.a1b2c3d".into())
        );
        assert_eq!(callback(None), Err("\"callback\" parameter required"));
        for bad in [
            "c=%20",
            "c=*",
            "c=abc(",
            "c=abc%28",
            "c=",
            "c=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(
                callback(Some(bad)),
                Err("invalid \"callback\" parameter"),
                "{bad}"
            );
        }
    }
}
