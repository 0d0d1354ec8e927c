//! The demo page on the main listener (`[demo]`, [`config`]): a chat room over sockjs-client
//! and STOMP with a transport picker, so a person can watch every transport work.
//!
//! The page (`demo.html`) is embedded in the binary. The two client libraries it loads are not:
//! they come from the `demo/` npm package (`npm ci --prefix demo`), read once at start-up from
//! `[demo] assets_dir` and served from memory. Only the fixed list in [`ASSETS`] is served;
//! a request path never names a file on disk. When the libraries are missing the page and
//! the start-up log say what to run.

pub mod config;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};

pub use config::DemoConfig;

use crate::sockjs::http::{
    APPLICATION_JAVASCRIPT, HttpResponse, TEXT_HTML, TEXT_PLAIN, method_not_allowed, not_found,
    response,
};

/// The page, with `{{ path }}` replaced by the page's path and `{{ settings }}` by a JSON
/// object at start-up.
const PAGE: &str = include_str!("demo.html");

/// The command that installs the client libraries, from the source tree's root.
pub const INSTALL_COMMAND: &str = "npm ci --prefix demo";

/// The files served under the page's path: (name in the URL, path inside `assets_dir`).
pub const ASSETS: &[(&str, &str)] = &[
    ("sockjs.min.js", "sockjs-client/dist/sockjs.min.js"),
    (
        "stomp.umd.min.js",
        "@stomp/stompjs/bundles/stomp.umd.min.js",
    ),
];

/// The page's Content-Security-Policy: scripts, styles, frames and connections from this
/// origin only (the iframe and htmlfile transports load frames, JSONP loads scripts).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; frame-src 'self'; img-src 'self' data:";

/// The demo page and its libraries, ready to serve.
#[derive(Debug)]
pub struct Demo {
    /// The page's path (`/demo`).
    path: String,
    /// The STOMP service's prefix.
    service: String,
    /// The rendered page.
    page: Bytes,
    /// The contents of [`ASSETS`], in order; None for a file that could not be read.
    assets: Vec<Option<Bytes>>,
    /// Where the libraries were found, or the directories searched.
    assets_dir: Result<PathBuf, Vec<PathBuf>>,
}

impl Demo {
    /// The demo of a `[demo]` section, or None when it is off. Relative `assets_dir`s are
    /// looked up in the working directory, then `base_dir` (the config file's directory), then
    /// the source tree the binary was built from; the first holding every asset wins. Reads
    /// the files once, here.
    pub fn from_config(config: &DemoConfig, base_dir: &Path) -> Option<Demo> {
        if !config.enabled {
            return None;
        }
        let candidates = candidate_dirs(&config.assets_dir, base_dir);
        let found = candidates
            .iter()
            .find(|dir| ASSETS.iter().all(|(_, rel)| dir.join(rel).is_file()))
            .cloned();
        let assets = ASSETS
            .iter()
            .map(|(_, rel)| {
                let dir = found.as_ref()?;
                std::fs::read(dir.join(rel)).ok().map(Bytes::from)
            })
            .collect();
        let assets_dir = found.ok_or(candidates);
        let settings = serde_json::json!({
            "service": config.service,
            "path": config.path,
            "libraries": assets_dir.is_ok(),
            "install": INSTALL_COMMAND,
        });
        // Inside a <script> element: no `<` may end it early.
        let settings = settings.to_string().replace('<', "\\u003c");
        // `path` is checked to be URL-safe characters only (config::check_path).
        let page = PAGE
            .replace("{{ path }}", &config.path)
            .replace("{{ settings }}", &settings);
        let page = Bytes::from(page);
        Some(Demo {
            path: config.path.clone(),
            service: config.service.clone(),
            page,
            assets,
            assets_dir,
        })
    }

    /// The page's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The STOMP service's prefix.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the client libraries were read from, or every directory searched for them.
    pub fn assets_dir(&self) -> Result<&Path, &[PathBuf]> {
        match &self.assets_dir {
            Ok(dir) => Ok(dir.as_path()),
            Err(searched) => Err(searched.as_slice()),
        }
    }

    /// The answer for `path` when it is the page's or one of its files; None otherwise.
    pub fn handle(&self, method: &Method, path: &str) -> Option<HttpResponse> {
        let rest = path.strip_prefix(self.path.as_str())?;
        let file = match rest {
            "" | "/" => None,
            _ => Some(rest.strip_prefix('/')?),
        };
        if *method != Method::GET && *method != Method::HEAD {
            return Some(method_not_allowed("GET, HEAD"));
        }
        let Some(file) = file else {
            let mut resp = response(StatusCode::OK, TEXT_HTML, self.page.clone());
            let headers = resp.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            );
            return Some(resp);
        };
        let Some(index) = ASSETS.iter().position(|(name, _)| *name == file) else {
            return Some(not_found());
        };
        let mut resp = match self.assets.get(index).cloned().flatten() {
            Some(bytes) => {
                let mut resp = response(StatusCode::OK, APPLICATION_JAVASCRIPT, bytes);
                resp.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                resp
            }
            None => response(
                StatusCode::NOT_FOUND,
                TEXT_PLAIN,
                format!(
                    "{file} is not installed: run `{INSTALL_COMMAND}` in the gateway's source \
                     tree, then restart the gateway\n"
                ),
            ),
        };
        resp.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Some(resp)
    }

    /// `GET /`: a redirect to the page (served when no service is mounted at `/`).
    pub fn root_redirect(&self) -> HttpResponse {
        let mut resp = response(
            StatusCode::FOUND,
            TEXT_PLAIN,
            format!("The demo page is at {}\n", self.path),
        );
        if let Ok(location) = HeaderValue::from_str(&self.path) {
            resp.headers_mut().insert(header::LOCATION, location);
        }
        resp
    }
}

/// The directories a relative `assets_dir` may be in, in order, without repeats.
fn candidate_dirs(assets_dir: &Path, base_dir: &Path) -> Vec<PathBuf> {
    if assets_dir.is_absolute() {
        return vec![assets_dir.to_path_buf()];
    }
    let mut dirs = vec![assets_dir.to_path_buf()];
    for base in [base_dir, Path::new(env!("CARGO_MANIFEST_DIR"))] {
        let dir = base.join(assets_dir);
        if !dirs.contains(&dir) && base != Path::new(".") && !base.as_os_str().is_empty() {
            dirs.push(dir);
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_dirs_are_searched_in_order() {
        let dirs = candidate_dirs(Path::new("demo/node_modules"), Path::new("/etc/gw"));
        assert_eq!(dirs[0], PathBuf::from("demo/node_modules"));
        assert_eq!(dirs[1], PathBuf::from("/etc/gw/demo/node_modules"));
        assert_eq!(
            dirs[2],
            Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/node_modules")
        );
        assert_eq!(
            candidate_dirs(Path::new("/opt/libs"), Path::new("/etc/gw")),
            vec![PathBuf::from("/opt/libs")]
        );
    }

    #[test]
    fn the_settings_cannot_end_the_script_element() {
        let config = DemoConfig {
            service: "/x</script><b>".into(),
            assets_dir: PathBuf::from("/nonexistent"),
            ..DemoConfig::embedded()
        };
        let demo = Demo::from_config(&config, Path::new(".")).expect("enabled");
        let page = std::str::from_utf8(&demo.page).expect("utf-8");
        assert!(!page.contains("/x</script>"));
        assert!(page.contains("\\u003c/script>"));
    }
}
