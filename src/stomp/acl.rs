//! Authorization: ordered allow/deny rules for SUBSCRIBE and SEND by destination pattern,
//! per role or user (issue: "Security").
//!
//! Rule patterns use the broker's syntax: `*` matches within one segment, `**` any number of
//! segments, `{name}` one segment, and `{user}` exactly the caller's own user name (so
//! `/user/{user}/**` lets a user reach only their own user destinations). A rule with
//! `{user}` never applies to an anonymous caller, nor to a name containing the separator.
//! Rules are compiled once, when the configuration is loaded; `{user}` is filled in while
//! matching, without building a string per frame.
//!
//! # How a request is judged
//!
//! Only rules whose `action`, `roles` and `users` apply to the caller are considered, in
//! order.
//!
//! * **A literal destination** (every SEND; a SUBSCRIBE without `*` or `{`): the first rule
//!   whose pattern matches it decides. When none does, `acl_default` decides.
//! * **A pattern SUBSCRIBE** is judged by what it *can* receive, because the broker delivers
//!   every destination it matches. Walking the rules in order: a `deny` rule that overlaps the
//!   pattern (some destination matches both) denies; an `allow` rule that covers it (matches
//!   every destination it matches) allows; any other rule is passed over. When the walk ends,
//!   an `allow` default allows (no deny rule can apply to anything it receives) and a `deny`
//!   default denies (no single allow rule covered it). So with `subscribe /topic/admin/**
//!   deny`, `/topic/**`, `/topic/*/log` and `/topic/{x}/log` are denied and `/topic/news/*` is
//!   allowed. For a literal destination these two rules reduce to the first: overlapping and
//!   covering a literal both mean matching it.
//!
//! ```toml
//! [[stomp.acl]]
//! action = "send"
//! destination = "/app/orders/*"
//! policy = "allow"
//! roles = ["trader"]
//! ```

pub use super::config::{AclAction, AclRule, Policy};
use super::pattern::Pattern;

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The user name, if authenticated.
    pub user: Option<&'a str>,
    /// The principal's roles.
    pub roles: &'a [String],
}

/// One rule, compiled.
#[derive(Debug, Clone)]
struct CompiledRule {
    /// SUBSCRIBE, SEND or both.
    action: AclAction,
    /// Allow or deny.
    policy: Policy,
    /// Roles the rule is limited to (empty: everyone).
    roles: Vec<String>,
    /// User names the rule is limited to (empty: everyone).
    users: Vec<String>,
    /// The destination pattern.
    pattern: Pattern,
    /// Whether the pattern mentions `{user}`.
    uses_user: bool,
}

/// The compiled rule list.
#[derive(Debug, Clone)]
pub struct Acl {
    /// Rules in order.
    rules: Vec<CompiledRule>,
    /// What applies when no rule does.
    default: Policy,
    /// The broker's segment separator.
    separator: char,
}

impl Acl {
    /// Compile the configured rules.
    pub fn new(rules: &[AclRule], default: Policy, separator: char) -> Acl {
        let rules = rules
            .iter()
            .map(|rule| CompiledRule {
                action: rule.action,
                policy: rule.policy,
                roles: rule.roles.clone(),
                users: rule.users.clone(),
                pattern: Pattern::compile_rule(&rule.destination, separator),
                uses_user: rule.destination.contains("{user}"),
            })
            .collect();
        Acl {
            rules,
            default,
            separator,
        }
    }

    /// The rules that apply to `caller` for `action`, each with the user name its `{user}`
    /// stands for.
    fn applicable<'a>(
        &'a self,
        action: AclAction,
        caller: Caller<'a>,
    ) -> impl Iterator<Item = (&'a CompiledRule, Option<&'a str>)> {
        self.rules.iter().filter_map(move |rule| {
            if rule.action != AclAction::Any && rule.action != action {
                return None;
            }
            if !rule.roles.is_empty() && !caller.roles.iter().any(|r| rule.roles.contains(r)) {
                return None;
            }
            let name = caller.user.unwrap_or("anonymous");
            if !rule.users.is_empty() && !rule.users.iter().any(|u| u == name) {
                return None;
            }
            if !rule.uses_user {
                return Some((rule, None));
            }
            match caller.user {
                Some(user) if !user.contains(self.separator) => Some((rule, Some(user))),
                _ => None,
            }
        })
    }

    /// Whether `caller` may perform `action` on the literal `destination`: the first rule
    /// that matches decides.
    pub fn check(&self, action: AclAction, destination: &str, caller: Caller<'_>) -> Policy {
        self.applicable(action, caller)
            .find(|(rule, user)| rule.pattern.matches_as(destination, *user))
            .map_or(self.default, |(rule, _)| rule.policy)
    }

    /// Whether `caller` may SUBSCRIBE to `pattern`, judged by every destination it can
    /// receive (see the module comment).
    pub fn check_pattern(&self, pattern: &Pattern, caller: Caller<'_>) -> Policy {
        for (rule, user) in self.applicable(AclAction::Subscribe, caller) {
            match rule.policy {
                Policy::Deny if rule.pattern.overlaps_as(pattern, user) => return Policy::Deny,
                Policy::Allow if rule.pattern.covers_as(pattern, user) => return Policy::Allow,
                _ => {}
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
    fn subscribe_pattern(acl: &Acl, pattern: &str, caller: Caller<'_>) -> Policy {
        let pattern = Pattern::compile(pattern, '/', &Default::default()).unwrap();
        acl.check_pattern(&pattern, caller)
    }

    #[test]
    fn a_pattern_subscribe_is_judged_by_what_it_can_receive() {
        let acl = Acl::new(
            &[rule(
                AclAction::Subscribe,
                "/topic/admin/**",
                Policy::Deny,
                &[],
            )],
            Policy::Allow,
            '/',
        );
        let anyone = Caller {
            user: Some("ann"),
            roles: &[],
        };
        for denied in [
            "/topic/**",
            "/topic/*/log",
            "/topic/{x}/log",
            "/**",
            "/topic/adm*/x",
        ] {
            assert_eq!(
                subscribe_pattern(&acl, denied, anyone),
                Policy::Deny,
                "{denied}"
            );
        }
        for allowed in ["/topic/news/*", "/topic/b*/**", "/queue/**"] {
            assert_eq!(
                subscribe_pattern(&acl, allowed, anyone),
                Policy::Allow,
                "{allowed}"
            );
        }
    }

    #[test]
    fn an_earlier_allow_must_cover_the_whole_pattern() {
        let acl = Acl::new(
            &[
                rule(
                    AclAction::Subscribe,
                    "/topic/admin/public/**",
                    Policy::Allow,
                    &[],
                ),
                rule(AclAction::Subscribe, "/topic/admin/**", Policy::Deny, &[]),
                rule(AclAction::Any, "/user/{user}/**", Policy::Allow, &[]),
                rule(AclAction::Subscribe, "/topic/**", Policy::Allow, &[]),
            ],
            Policy::Deny,
            '/',
        );
        let alice = Caller {
            user: Some("alice"),
            roles: &[],
        };
        let cases = [
            ("/topic/admin/public/*", Policy::Allow),
            ("/topic/admin/p*/x", Policy::Deny),
            ("/topic/**", Policy::Deny),
            ("/topic/news/**", Policy::Allow),
            ("/user/alice/*", Policy::Allow),
            // Default deny: partly covered by allow rules is not enough.
            ("/user/*/queue", Policy::Deny),
            ("/queue/*", Policy::Deny),
        ];
        for (pattern, expected) in cases {
            assert_eq!(
                subscribe_pattern(&acl, pattern, alice),
                expected,
                "{pattern}"
            );
        }
        let anonymous = Caller {
            user: None,
            roles: &[],
        };
        assert_eq!(
            subscribe_pattern(&acl, "/user/alice/*", anonymous),
            Policy::Deny
        );
    }

    #[test]
    fn user_names_are_literal_in_rules() {
        let acl = Acl::new(
            &[rule(AclAction::Any, "/user/{user}/**", Policy::Allow, &[])],
            Policy::Deny,
            '/',
        );
        let star = Caller {
            user: Some("*"),
            roles: &[],
        };
        assert_eq!(
            acl.check(AclAction::Send, "/user/bob/queue/x", star),
            Policy::Deny
        );
        assert_eq!(
            acl.check(AclAction::Send, "/user/*/queue/x", star),
            Policy::Allow
        );
        let slash = Caller {
            user: Some("a/b"),
            roles: &[],
        };
        assert_eq!(
            acl.check(AclAction::Send, "/user/a/b/queue/x", slash),
            Policy::Deny
        );
    }
}
