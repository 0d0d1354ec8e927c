//! The conformance services of sockjs.md §12: small applications on the session seam.

mod amplify;
mod broadcast;
mod close;
mod echo;
mod ticker;

use std::sync::Arc;

use crate::session::App;

pub use amplify::Amplify;
pub use broadcast::Broadcast;
pub use close::Close;
pub use echo::Echo;
pub use ticker::Ticker;

/// The application a config `app` name stands for.
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
