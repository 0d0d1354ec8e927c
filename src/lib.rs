//! sockjs-gateway: a SockJS server with a STOMP broker behind it.
//!
//! Data flows one way: carriers (`sockjs`, raw WebSocket, TCP) produce sessions
//! ([`session::SessionHandle`]); applications (`apps`, `stomp`) consume them. `server` is the
//! composition root, the only module that knows both sides.

pub mod session;
pub mod stomp;
