//! sockjs-gateway: a SockJS server with a STOMP broker behind it.
//!
//! Data flows one way: carriers (`sockjs`, raw WebSocket, TCP) produce sessions
//! ([`session::SessionHandle`]); applications (`apps`, `stomp`) consume them. `server` is the
//! composition root, the only module that knows both sides.

// Handlers return a finished HTTP answer as their `Err` (a 404, a 500 with the protocol's
// text); it is sent as is, so boxing it would only add an allocation to every error path.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod apps;
pub mod auth;
pub mod backend;
pub mod cluster;
pub mod cluster_link;
pub mod config;
pub mod demo;
pub mod drain;
pub mod front;
pub mod limits;
pub mod proxy;
pub mod relay;
pub mod server;
pub mod session;
pub mod sockjs;
pub mod stomp;
pub mod tls;

pub use server::Gateway;
