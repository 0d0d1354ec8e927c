//! The applications on the session seam: the conformance services of sockjs.md §12, and
//! `proxy`, which relays each session to an upstream WebSocket server.

mod amplify;
mod broadcast;
mod close;
mod echo;
pub mod proxy;
mod ticker;

use std::sync::Arc;

use crate::session::App;

pub use amplify::Amplify;
pub use broadcast::Broadcast;
pub use close::Close;
pub use echo::Echo;
pub use proxy::Proxy;
pub use ticker::Ticker;

/// The application a config `app` name stands for, for the apps without settings of their
/// own (`stomp` and `proxy` are built by the server from their config sections).
pub fn by_name(name: &str) -> Option<Arc<dyn App>> {
    Some(match name {
        "echo" => Arc::new(Echo),
        "close" => Arc::new(Close),
        "amplify" => Arc::new(Amplify),
        "broadcast" => Arc::new(Broadcast::default()),
        "ticker" => Arc::new(Ticker),
        _ => return None,
    })
}
