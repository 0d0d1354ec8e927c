//! Authorization: ordered allow/deny rules for SUBSCRIBE and SEND by destination pattern,
//! per role or user (issue: "Security"). The first rule that applies decides; when none
//! does, `acl_default` decides (allow unless configured otherwise).
//!
//! Patterns use the broker's syntax: `*` matches within one segment, `**` any number of
//! segments, and `{user}` matches exactly the caller's own user name (so
//! `/user/{user}/**` lets a user reach only their own user destinations).
//!
//! ```toml
//! [[stomp.acl]]
//! action = "send"
//! destination = "/app/orders/*"
//! policy = "allow"
//! roles = ["trader"]
//! ```

pub use super::config::{AclAction, AclRule, Policy};
use super::destination::Pattern;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The user name, if authenticated.
    pub user: Option<&'a str>,
    /// The principal's roles.
    pub roles: &'a [String],
}

/// The compiled rule list.
#[derive(Debug, Clone)]
pub struct Acl {
    /// Rules in order.
    rules: Vec<AclRule>,
    /// What applies when no rule does.
    default: Policy,
    /// The broker's segment separator.
    separator: char,
}

impl Acl {
    /// Compile the configured rules.
    pub fn new(rules: &[AclRule], default: Policy, separator: char) -> Acl {
        Acl {
            rules: rules.to_vec(),
            default,
            separator,
        }
    }

    /// Whether `caller` may perform `action` on `destination`.
    pub fn check(&self, action: AclAction, destination: &str, caller: Caller<'_>) -> Policy {
        for rule in &self.rules {
            if rule.action != AclAction::Any && rule.action != action {
                continue;
            }
            if !rule.roles.is_empty() && !caller.roles.iter().any(|r| rule.roles.contains(r)) {
                continue;
            }
            if !rule.users.is_empty()
                && !rule
                    .users
                    .iter()
                    .any(|u| u == caller.user.unwrap_or("anonymous"))
            {
                continue;
            }
            let pattern = if rule.destination.contains("{user}") {
                match caller.user {
                    Some(user) if !user.contains(self.separator) => {
                        rule.destination.replace("{user}", user)
                    }
                    _ => continue,
                }
            } else {
                rule.destination.clone()
            };
            if Pattern::new(&pattern, self.separator).matches(destination) {
                return rule.policy;
            }
        }
        self.default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: AclAction, destination: &str, policy: Policy, roles: &[&str]) -> AclRule {
        AclRule {
            action,
            destination: destination.into(),
            policy,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            users: vec![],
        }
    }

    #[test]
    fn the_first_applicable_rule_decides() {
        let acl = Acl::new(
            &[
                rule(AclAction::Send, "/app/orders/*", Policy::Allow, &["trader"]),
                rule(AclAction::Send, "/app/**", Policy::Deny, &[]),
                rule(AclAction::Any, "/user/{user}/**", Policy::Allow, &[]),
                rule(AclAction::Any, "/user/**", Policy::Deny, &[]),
                rule(AclAction::Subscribe, "/topic/admin/**", Policy::Deny, &[]),
            ],
            Policy::Allow,
            '/',
        );
        let trader = ["trader".to_string()];
        let alice = Caller {
            user: Some("alice"),
            roles: &trader,
        };
        let bob = Caller {
            user: Some("bob"),
            roles: &[],
        };
        assert_eq!(
            acl.check(AclAction::Send, "/app/orders/new", alice),
            Policy::Allow
        );
        assert_eq!(
            acl.check(AclAction::Send, "/app/orders/new", bob),
            Policy::Deny
        );
        assert_eq!(
            acl.check(AclAction::Send, "/user/bob/queue/x", bob),
            Policy::Allow
        );
        assert_eq!(
            acl.check(AclAction::Send, "/user/alice/queue/x", bob),
            Policy::Deny
        );
        assert_eq!(
            acl.check(AclAction::Subscribe, "/topic/admin/log", alice),
            Policy::Deny
        );
        assert_eq!(
            acl.check(AclAction::Send, "/topic/admin/log", alice),
            Policy::Allow
        );
        assert_eq!(
            acl.check(AclAction::Subscribe, "/topic/news", bob),
            Policy::Allow
        );
    }
}
