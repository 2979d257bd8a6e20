//! RBAC's rule semantics, as upstream's `rbac/v1` helpers and `validation.Covers` define them:
//! whether a rule allows a request, and whether a set of rules covers another (escalation
//! prevention).

use crate::apiserver::auth::{Attributes, PolicyRule};

const ALL: &str = "*";

fn has(values: &[String], value: &str) -> bool {
    values.iter().any(|v| v == value)
}

fn matches_all_or(values: &[String], value: &str) -> bool {
    values.iter().any(|v| v == ALL || v == value)
}

/// Whether `rule` allows the request described by `attributes`.
pub fn allows(rule: &PolicyRule, attributes: &Attributes<'_>) -> bool {
    match attributes {
        Attributes::Resource(r) => {
            matches_all_or(&rule.verbs, r.verb)
                && matches_all_or(&rule.api_groups, r.group)
                && resource_matches(rule, r.resource, r.subresource.unwrap_or(""))
                && (rule.resource_names.is_empty()
                    || r.name.is_some_and(|name| has(&rule.resource_names, name)))
        }
        Attributes::NonResource { verb, path } => {
            matches_all_or(&rule.verbs, verb)
                && rule
                    .non_resource_urls
                    .iter()
                    .any(|url| url_matches(url, path))
        }
    }
}

/// `resources` entries: `*`, `pods`, `pods/log`, and `*/scale` for a subresource of any
/// resource.
fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|allowed| {
        if allowed == ALL {
            return true;
        }
        if subresource.is_empty() {
            return allowed == resource;
        }
        let (res, sub) = allowed.split_once('/').unwrap_or((allowed, ""));
        sub == subresource && (res == resource || res == ALL)
    })
}

/// `nonResourceURLs` entries: a path, `*`, or a prefix ending in `*`.
fn url_matches(allowed: &str, path: &str) -> bool {
    allowed == ALL
        || allowed == path
        || allowed
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// Whether the `owner` rules grant everything `servant` grants: each servant rule, broken
/// into one verb, group, resource and name at a time, must be covered by one owner rule.
/// Returns the servant's parts that are not covered, as upstream lists them.
pub fn uncovered(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut missing = Vec::new();
    for rule in servant {
        for atom in atoms(rule) {
            if !owner.iter().any(|o| covers(o, &atom)) {
                missing.push(atom);
            }
        }
    }
    missing
}

/// A rule split into rules with one verb, one group, one resource and at most one name (or
/// one verb and one URL).
fn atoms(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..Default::default()
            });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let one = |names: Vec<String>| PolicyRule {
                    verbs: vec![verb.clone()],
                    api_groups: vec![group.clone()],
                    resources: vec![resource.clone()],
                    resource_names: names,
                    ..Default::default()
                };
                if rule.resource_names.is_empty() {
                    out.push(one(Vec::new()));
                } else {
                    for name in &rule.resource_names {
                        out.push(one(vec![name.clone()]));
                    }
                }
            }
        }
    }
    out
}

/// Whether one owner rule covers one atomic servant rule (upstream's `ruleCovers`).
fn covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, ALL) || atom.verbs.iter().all(|v| has(&owner.verbs, v));
    if !verbs {
        return false;
    }
    if !atom.non_resource_urls.is_empty() {
        return atom.non_resource_urls.iter().all(|url| {
            owner.non_resource_urls.iter().any(|o| {
                o == url
                    || o.strip_suffix('*')
                        .is_some_and(|prefix| url.starts_with(prefix))
            })
        });
    }
    let groups =
        has(&owner.api_groups, ALL) || atom.api_groups.iter().all(|g| has(&owner.api_groups, g));
    let resources = has(&owner.resources, ALL)
        || atom.resources.iter().all(|r| {
            has(&owner.resources, r)
                || r.split_once('/')
                    .is_some_and(|(_, sub)| has(&owner.resources, &format!("*/{sub}")))
        });
    let names = owner.resource_names.is_empty()
        || (!atom.resource_names.is_empty()
            && atom
                .resource_names
                .iter()
                .all(|n| has(&owner.resource_names, n)));
    groups && resources && names
}

/// Upstream's compact rendering of a rule in escalation errors:
/// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
pub fn describe(rule: &PolicyRule) -> String {
    let list = |values: &[String]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&rule.api_groups)));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("Resources:[{}]", list(&rule.resources)));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&rule.resource_names)));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:[{}]",
            list(&rule.non_resource_urls)
        ));
    }
    parts.push(format!("Verbs:[{}]", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::ResourceAttributes;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            verbs: own(verbs),
            api_groups: own(groups),
            resources: own(resources),
            resource_names: own(names),
            ..Default::default()
        }
    }

    fn request<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes::Resource(ResourceAttributes {
            verb,
            group,
            resource,
            subresource: sub,
            namespace: Some("a"),
            name,
        })
    }

    #[test]
    fn rules_match_as_upstreams() {
        let pods = rule(&["get", "list"], &[""], &["pods"], &[]);
        assert!(allows(&pods, &request("get", "", "pods", None, Some("p"))));
        assert!(!allows(&pods, &request("delete", "", "pods", None, None)));
        assert!(!allows(&pods, &request("get", "apps", "pods", None, None)));
        // A subresource is its own resource.
        assert!(!allows(
            &pods,
            &request("get", "", "pods", Some("log"), None)
        ));
        let logs = rule(&["get"], &[""], &["pods/log"], &[]);
        assert!(allows(
            &logs,
            &request("get", "", "pods", Some("log"), None)
        ));
        assert!(!allows(&logs, &request("get", "", "pods", None, None)));
        let any_scale = rule(&["*"], &["*"], &["*/scale"], &[]);
        assert!(allows(
            &any_scale,
            &request("update", "apps", "deployments", Some("scale"), None)
        ));
        assert!(!allows(
            &any_scale,
            &request("update", "apps", "deployments", None, None)
        ));
        let everything = rule(&["*"], &["*"], &["*"], &[]);
        assert!(allows(
            &everything,
            &request("get", "", "pods", Some("log"), None)
        ));
        let named = rule(&["get"], &[""], &["configmaps"], &["app"]);
        assert!(allows(
            &named,
            &request("get", "", "configmaps", None, Some("app"))
        ));
        assert!(!allows(
            &named,
            &request("get", "", "configmaps", None, Some("other"))
        ));
        // A list has no name, so a rule with names never allows it.
        assert!(!allows(
            &named,
            &request("list", "", "configmaps", None, None)
        ));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let discovery = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/api".into(), "/apis/*".into()],
            ..Default::default()
        };
        let get = |path| Attributes::NonResource { verb: "get", path };
        assert!(allows(&discovery, &get("/api")));
        assert!(!allows(&discovery, &get("/api/v1")));
        assert!(allows(&discovery, &get("/apis/apps/v1")));
        assert!(!allows(&discovery, &get("/metrics")));
        let post = Attributes::NonResource {
            verb: "post",
            path: "/api",
        };
        assert!(!allows(&discovery, &post));
    }

    #[test]
    fn covering_follows_upstream() {
        let admin = vec![rule(&["*"], &["*"], &["*"], &[])];
        let edit_pods = vec![rule(&["get", "create"], &[""], &["pods", "pods/log"], &[])];
        assert!(uncovered(&admin, &edit_pods).is_empty());
        let missing = uncovered(&edit_pods, &admin);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            describe(&missing[0]),
            r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#
        );
        // More verbs than held.
        let more = vec![rule(&["get", "delete"], &[""], &["pods"], &[])];
        let missing = uncovered(&edit_pods, &more);
        assert_eq!(
            missing,
            vec![rule(&["delete"], &[""], &["pods"], &[])],
            "only the delete is missing"
        );
        // `*/scale` covers any resource's scale, and a named grant is covered by an unnamed one.
        let scale = vec![rule(&["update"], &["apps"], &["*/scale"], &[])];
        assert!(
            uncovered(
                &scale,
                &[rule(&["update"], &["apps"], &["deployments/scale"], &[])]
            )
            .is_empty()
        );
        assert!(uncovered(&edit_pods, &[rule(&["get"], &[""], &["pods"], &["x"])]).is_empty());
        let named = vec![rule(&["get"], &[""], &["pods"], &["x"])];
        assert!(!uncovered(&named, &[rule(&["get"], &[""], &["pods"], &[])]).is_empty());
    }
}
