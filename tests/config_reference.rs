//! The README's configuration reference against the code: every key the config structs
//! accept (as their serde derives declare them) must be documented in README.md, and every
//! key a reference table names must exist, so neither can drift from the other.

use sockjs_gateway::admin::AdminConfig;
use sockjs_gateway::auth::{AuthConfig, JwtConfig};
use sockjs_gateway::backend::BackendConfig;
use sockjs_gateway::cluster::config::{ClusterConfig, InboxConfig};
use sockjs_gateway::config::types::field_names;
use sockjs_gateway::config::{Config, ServerConfig, ServiceConfig};
use sockjs_gateway::demo::DemoConfig;
use sockjs_gateway::stomp::StompConfig;
use sockjs_gateway::stomp::acl::AclRule;
use sockjs_gateway::stomp::config::RelayConfig;

/// Each table of the file with the keys its struct accepts. A section added to [`Config`]
/// must be added here too (the first test says so).
fn sections() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("server", field_names::<ServerConfig>()),
        ("service", field_names::<ServiceConfig>()),
        ("auth", field_names::<AuthConfig>()),
        ("auth.jwt", field_names::<JwtConfig>()),
        ("stomp", field_names::<StompConfig>()),
        ("stomp.acl", field_names::<AclRule>()),
        ("stomp.relay", field_names::<RelayConfig>()),
        ("admin", field_names::<AdminConfig>()),
        ("backend", field_names::<BackendConfig>()),
        ("cluster", field_names::<ClusterConfig>()),
        ("cluster.inbox", field_names::<InboxConfig>()),
        ("demo", field_names::<DemoConfig>()),
    ]
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// Whether the README documents `key` of `section`: named in backticks, set in a TOML
/// example, or (a table of its own) shown as `[section.key]`.
fn documented(readme: &str, section: &str, key: &str) -> bool {
    readme.contains(&format!("`{key}`"))
        || readme.contains(&format!("[{section}.{key}]"))
        || readme.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}

#[test]
fn every_section_of_the_config_is_listed_here() {
    let listed: Vec<&str> = sections().iter().map(|(name, _)| *name).collect();
    for top in field_names::<Config>() {
        assert!(
            listed.contains(top),
            "[{top}] is a section of the config file: add it to sections() in \
             tests/config_reference.rs and document its keys in README.md"
        );
    }
}

#[test]
fn every_key_the_code_accepts_is_in_the_readme() {
    let readme = readme();
    let mut missing = Vec::new();
    for (section, keys) in sections() {
        assert!(!keys.is_empty(), "no keys found for [{section}]");
        for key in keys {
            if !documented(&readme, section, key) {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys the config accepts but README.md does not document: {missing:?}"
    );
}

#[test]
fn every_key_a_reference_table_names_exists() {
    let readme = readme();
    let start = readme
        .find("## Configuration reference")
        .expect("a Configuration reference section");
    let reference = &readme[start..];
    let end = reference[3..]
        .find("\n## ")
        .map_or(reference.len(), |i| i + 3);
    let known: Vec<&str> = sections()
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .collect();
    let mut unknown = Vec::new();
    for row in reference[..end].lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            if !known.contains(&name) {
                unknown.push(name.to_string());
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "README.md's reference tables name keys the config does not accept: {unknown:?}"
    );
}
