//! The `[demo]` section: the chat page on the main listener.
//!
//! ```toml
//! [demo]
//! enabled = true
//! path = "/demo"                   # the page; its two script files live under it
//! service = "/stomp"               # the prefix of an `app = "stomp"` service the page joins
//! assets_dir = "demo/node_modules" # where `npm ci --prefix demo` puts the client libraries
//! ```
//!
//! A config file without `[demo]` has no demo page; the embedded default serves one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;

/// Where the page is served unless `path` says otherwise.
pub const DEFAULT_PATH: &str = "/demo";

/// The demo page's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Whether the main listener serves the demo page (and `/` redirects to it).
    pub enabled: bool,
    /// The page's path; its script files are served under it.
    pub path: String,
    /// The prefix of the STOMP service (`app = "stomp"`) the page connects to.
    pub service: String,
    /// The directory holding the client libraries (`node_modules` of the `demo/` package):
    /// absolute, or looked up relative to the working directory, then the config file's
    /// directory, then the source tree the binary was built from.
    pub assets_dir: PathBuf,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: false,
            path: DEFAULT_PATH.to_string(),
            service: "/stomp".to_string(),
            assets_dir: PathBuf::from("demo/node_modules"),
        }
    }
}

impl DemoConfig {
    /// The embedded default: the page at `/demo` over `/stomp`.
    pub fn embedded() -> Self {
        DemoConfig {
            enabled: true,
            ..DemoConfig::default()
        }
    }

    /// Every problem of the section, as (key, message); none when the demo is off.
    pub fn problems(&self, services: &[ServiceConfig]) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        if let Err(message) = check_path(&self.path) {
            problems.push(("demo.path", message));
        }
        for s in services.iter().filter(|s| s.prefix != "/") {
            let inside = |outer: &str, inner: &str| {
                inner == outer
                    || inner
                        .strip_prefix(outer)
                        .is_some_and(|rest| rest.starts_with('/'))
            };
            if inside(&s.prefix, &self.path) || inside(&self.path, &s.prefix) {
                problems.push((
                    "demo.path",
                    format!(
                        "{:?} overlaps the service at {:?}; pick a path of its own",
                        self.path, s.prefix
                    ),
                ));
            }
        }
        match services.iter().find(|s| s.prefix == self.service) {
            None => problems.push((
                "demo.service",
                format!(
                    "no [[service]] has prefix {:?} (the page needs a service with app = \"stomp\")",
                    self.service
                ),
            )),
            Some(s) if s.app != "stomp" => problems.push((
                "demo.service",
                format!(
                    "the service at {:?} runs app {:?}; the page speaks STOMP and needs app = \"stomp\"",
                    self.service, s.app
                ),
            )),
            Some(_) => {}
        }
        problems
    }
}

/// A page path: `/` then segments of URL-safe characters, no empty, `.` or `..` segment,
/// no trailing slash.
fn check_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} must start with '/'"));
    };
    let safe = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    let bad = rest.is_empty()
        || rest
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == ".." || !seg.chars().all(safe));
    match bad {
        true => Err(format!(
            "{path:?} is not a page path like \"/demo\" (segments of letters, digits, '-', '.', \
             '_', '~'; not \"/\", no trailing slash)"
        )),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn services() -> Vec<ServiceConfig> {
        vec![
            ServiceConfig::new("/stomp", "stomp"),
            ServiceConfig::new("/echo", "echo"),
        ]
    }

    #[test]
    fn the_embedded_section_is_valid() {
        assert!(DemoConfig::embedded().problems(&services()).is_empty());
    }

    #[test]
    fn a_disabled_section_is_not_checked() {
        let demo = DemoConfig {
            path: "bad".into(),
            service: "/nowhere".into(),
            ..DemoConfig::default()
        };
        assert!(demo.problems(&services()).is_empty());
    }

    #[test]
    fn bad_paths_and_services_are_named() {
        for (path, service, key) in [
            ("demo", "/stomp", "demo.path"),
            ("/", "/stomp", "demo.path"),
            ("/demo/", "/stomp", "demo.path"),
            ("/a/../b", "/stomp", "demo.path"),
            ("/de mo", "/stomp", "demo.path"),
            ("/stomp", "/stomp", "demo.path"),
            ("/stomp/demo", "/stomp", "demo.path"),
            ("/demo", "/nowhere", "demo.service"),
            ("/demo", "/echo", "demo.service"),
        ] {
            let demo = DemoConfig {
                path: path.into(),
                service: service.into(),
                ..DemoConfig::embedded()
            };
            let problems = demo.problems(&services());
            assert!(
                problems.iter().any(|(k, _)| *k == key),
                "{path} {service}: {problems:?}"
            );
        }
    }
}
