//! `GET P/info` (sockjs.md §2.2): what the client needs to pick a transport, answered at once
//! because sockjs-client derives every transport timeout from this round trip.

use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::config::ServiceConfig;
use super::http::{APPLICATION_JSON, HttpResponse, response, set_cors, set_no_cache};

/// The `/info` answer: never a cookie, always fresh entropy.
pub fn info(config: &ServiceConfig, req: &HeaderMap) -> HttpResponse {
    let mut body = json!({
        "websocket": config.websocket,
        "cookie_needed": config.cookie_needed,
        "origins": ["*:*"],
        "entropy": rand::random::<u32>(),
    });
    if let Some(base_url) = &config.base_url {
        body["base_url"] = json!(base_url);
    }
    let mut resp = response(StatusCode::OK, APPLICATION_JSON, body.to_string());
    set_no_cache(resp.headers_mut());
    set_cors(req, resp.headers_mut());
    resp
}
