//! How each receiving transport wraps frames: its prelude and the bytes of one chunk
//! (sockjs.md §5): xhr with a newline, EventSource as a data line with `%`, CR, LF and NUL
//! percent-escaped (sockjs-client runs `decodeURI` on every event, §13.11), htmlfile as a
//! script chunk calling the parent's callback after a padded head page, JSONP as a callback
//! call.

use bytes::Bytes;

use crate::session::TransportKind;
use crate::sockjs::frame;

/// The htmlfile head page; `{{ callback }}` is the (validated) callback.
const HEAD: &str = r#"<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{{ callback }};
    c.start();
    function p(d) {c.message(d);};
    window.onload = function() {c.stop();};
  </script>
"#;

/// The xhr-streaming prelude: 2048 `h` and a newline (§5.3), so browsers start delivering.
static XHR_PRELUDE: [u8; 2049] = {
    let mut p = [b'h'; 2049];
    p[2048] = b'\n';
    p
};

/// How a receiving transport wraps frames.
pub enum Framing {
    XhrPolling,
    XhrStreaming,
    EventSource,
    /// htmlfile with its (validated) callback.
    HtmlFile(String),
    /// JSONP polling with its (validated) callback.
    Jsonp(String),
}

impl Framing {
    /// The transport kind, for the session's info.
    pub fn kind(&self) -> TransportKind {
        match self {
            Framing::XhrPolling => TransportKind::XhrPolling,
            Framing::XhrStreaming => TransportKind::XhrStreaming,
            Framing::EventSource => TransportKind::EventSource,
            Framing::HtmlFile(_) => TransportKind::HtmlFile,
            Framing::Jsonp(_) => TransportKind::JsonpPolling,
        }
    }

    /// Polling transports end after one frame.
    pub(super) fn is_polling(&self) -> bool {
        matches!(self, Framing::XhrPolling | Framing::Jsonp(_))
    }

    /// The first chunk of a streaming response, not counted towards the response limit.
    pub(super) fn prelude(&self) -> Option<Bytes> {
        match self {
            Framing::XhrStreaming => Some(Bytes::from_static(&XHR_PRELUDE)),
            Framing::EventSource => Some(Bytes::from_static(b"\r\n")),
            Framing::HtmlFile(callback) => Some(html_prelude(callback)),
            Framing::XhrPolling | Framing::Jsonp(_) => None,
        }
    }

    /// One frame as the bytes of one chunk.
    pub(super) fn wrap(&self, f: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(f.len() + 32);
        match self {
            Framing::XhrPolling | Framing::XhrStreaming => {
                out.extend_from_slice(f);
                out.push(b'\n');
            }
            Framing::EventSource => {
                out.extend_from_slice(b"data: ");
                escape_into(&mut out, f);
                out.extend_from_slice(b"\r\n\r\n");
            }
            Framing::HtmlFile(_) => {
                out.extend_from_slice(b"<script>\np(");
                frame::quote_into(&mut out, &String::from_utf8_lossy(f), true);
                out.extend_from_slice(b");\n</script>\r\n");
            }
            Framing::Jsonp(callback) => {
                out.extend_from_slice(b"/**/");
                out.extend_from_slice(callback.as_bytes());
                out.push(b'(');
                frame::quote_into(&mut out, &String::from_utf8_lossy(f), false);
                out.extend_from_slice(b");\r\n");
            }
        }
        Bytes::from(out)
    }
}

/// The head page, padded with spaces to 1024 bytes, then `\r\n\r\n`.
fn html_prelude(callback: &str) -> Bytes {
    let mut page = HEAD.replace("{{ callback }}", callback);
    let pad = 1024usize.saturating_sub(page.len());
    page.extend(std::iter::repeat_n(' ', pad));
    page.push_str("\r\n\r\n");
    Bytes::from(page)
}

/// Append `frame` with `%`, CR, LF and NUL percent-escaped.
fn escape_into(out: &mut Vec<u8>, frame: &[u8]) {
    for &b in frame {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'\r' => out.extend_from_slice(b"%0D"),
            b'\n' => out.extend_from_slice(b"%0A"),
            0 => out.extend_from_slice(b"%00"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_htmlfile_prelude_is_padded_past_1024_bytes() {
        let p = super::html_prelude("cb");
        assert!(p.len() > 1024);
        assert!(p.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn percent_and_line_breaks_are_escaped() {
        let mut out = Vec::new();
        super::escape_into(&mut out, b"a[\"100% \r\n\0\"]");
        assert_eq!(out, b"a[\"100%25 %0D%0A%00\"]");
    }
}
