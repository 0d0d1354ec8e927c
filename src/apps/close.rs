//! `/close`: every session is closed with 3000 "Go away!" as soon as it opens.

use crate::session::{App, SessionHandle};

/// Closes every session at once.
pub struct Close;

impl App for Close {
    fn on_session(&self, session: SessionHandle) {
        session.close(3000, "Go away!");
    }
}
