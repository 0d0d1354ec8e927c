//! The greeting at the service root (sockjs.md §2.1).

use http::StatusCode;

use super::http::{HttpResponse, TEXT_PLAIN, response};

/// `GET P`: `Welcome to SockJS!\n`, no cookie, no caching headers.
pub fn greeting() -> HttpResponse {
    response(StatusCode::OK, TEXT_PLAIN, "Welcome to SockJS!\n")
}
