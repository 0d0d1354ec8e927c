//! The STOMP core: a STOMP 1.0/1.1/1.2 server with an embedded broker.
pub mod frame;
