//! Impersonation (`kubectl --as=… --as-group=…`): the `Impersonate-User`, `Impersonate-Group`,
//! `Impersonate-Uid` and `Impersonate-Extra-KEY` headers, each checked with the `impersonate`
//! verb as upstream does: `users` (or `serviceaccounts` in their namespace for a
//! ServiceAccount's name), `groups`, `uids` and `userextras/KEY` in `authentication.k8s.io`.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::{
    AUTHENTICATED, Attributes, Authorizer, ResourceAttributes, SERVICE_ACCOUNT_PREFIX, User,
    authorize,
};
use crate::apiserver::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Who a request acts as.
#[derive(Debug)]
pub enum Outcome {
    /// The caller itself: the request asks for no impersonation.
    Itself(User),
    Impersonating {
        user: User,
        by: User,
    },
}

/// Who the request acts as: the caller, or the user it impersonates. 403 when the caller may
/// not impersonate what it asks for; 400 when groups, uid or extras come without a user.
pub async fn apply(
    authorizer: &dyn Authorizer,
    caller: User,
    headers: &HeaderMap,
) -> Result<Outcome, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let user = values(USER).into_iter().next();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX)
            && let Ok(value) = value.to_str()
        {
            let key = percent_decode(key);
            extra.entry(key).or_default().push(value.to_string());
        }
    }
    let Some(name) = user else {
        if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra fields without impersonating a user",
            ));
        }
        return Ok(Outcome::Itself(caller));
    };

    let check =
        |resource: &'static str, group: &'static str, namespace: Option<String>, name: String| {
            let caller = &caller;
            async move {
                let attributes = Attributes::Resource(ResourceAttributes {
                    verb: "impersonate",
                    group,
                    resource,
                    subresource: None,
                    namespace: namespace.as_deref(),
                    name: Some(&name),
                });
                authorize(authorizer, caller, &attributes).await
            }
        };
    let mut as_groups = groups.clone();
    match name
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|r| r.split_once(':'))
    {
        Some((namespace, account)) => {
            check(
                "serviceaccounts",
                "",
                Some(namespace.to_string()),
                account.to_string(),
            )
            .await?;
            if groups.is_empty() {
                as_groups = vec![
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{namespace}"),
                ];
            }
        }
        None => check("users", "", None, name.clone()).await?,
    }
    for group in &groups {
        check("groups", "", None, group.clone()).await?;
    }
    if let Some(uid) = &uid {
        check("uids", "authentication.k8s.io", None, uid.clone()).await?;
    }
    for (key, values) in &extra {
        for value in values {
            let attributes = Attributes::Resource(ResourceAttributes {
                verb: "impersonate",
                group: "authentication.k8s.io",
                resource: "userextras",
                subresource: Some(key),
                namespace: None,
                name: Some(value),
            });
            authorize(authorizer, &caller, &attributes).await?;
        }
    }
    let mut as_user = if name == "system:anonymous" {
        User {
            name,
            groups: as_groups,
            ..Default::default()
        }
    } else {
        as_groups.retain(|g| g != AUTHENTICATED);
        User::new(name, as_groups)
    };
    as_user.uid = uid.unwrap_or_default();
    as_user.extra = extra;
    Ok(Outcome::Impersonating {
        user: as_user,
        by: caller,
    })
}

/// Extra keys are percent-encoded in header names (upstream's `unescapeExtraKey`).
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&key[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::Decision;

    /// Allows `impersonate` on exactly the listed (resource, name) pairs.
    struct Allows(Vec<(&'static str, &'static str)>);

    #[async_trait::async_trait]
    impl Authorizer for Allows {
        async fn authorize(&self, _: &User, attributes: &Attributes<'_>) -> Decision {
            let Attributes::Resource(r) = attributes else {
                return Decision::NoOpinion(String::new());
            };
            let allowed = r.verb == "impersonate"
                && self
                    .0
                    .iter()
                    .any(|(res, name)| *res == r.resource && Some(*name) == r.name);
            if allowed {
                Decision::Allow(String::new())
            } else {
                Decision::NoOpinion(String::new())
            }
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[tokio::test]
    async fn impersonation_needs_the_verb_on_each_part() {
        let alice = User::new("alice", []);
        let itself = apply(&Allows(vec![]), alice.clone(), &HeaderMap::new())
            .await
            .unwrap();
        assert!(matches!(itself, Outcome::Itself(u) if u == alice));

        let refused = apply(
            &Allows(vec![]),
            alice.clone(),
            &headers(&[("impersonate-user", "bob")]),
        )
        .await
        .unwrap_err();
        assert_eq!(
            refused.message,
            r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );

        let authorizer = Allows(vec![("users", "bob")]);
        let Outcome::Impersonating { user: bob, by } = apply(
            &authorizer,
            alice.clone(),
            &headers(&[("impersonate-user", "bob")]),
        )
        .await
        .unwrap() else {
            panic!("impersonating")
        };
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, ["system:authenticated"]);
        assert_eq!(by.name, "alice");

        let group_refused = apply(
            &authorizer,
            alice.clone(),
            &headers(&[("impersonate-user", "bob"), ("impersonate-group", "admins")]),
        )
        .await
        .unwrap_err();
        assert!(
            group_refused
                .message
                .contains("impersonate resource \"groups\"")
        );

        let Outcome::Impersonating { user: sa, .. } = apply(
            &Allows(vec![("serviceaccounts", "builder")]),
            alice.clone(),
            &headers(&[("impersonate-user", "system:serviceaccount:ci:builder")]),
        )
        .await
        .unwrap() else {
            panic!("impersonating")
        };
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ci",
                "system:authenticated"
            ]
        );

        let no_user = apply(&authorizer, alice, &headers(&[("impersonate-group", "x")]))
            .await
            .unwrap_err();
        assert_eq!(no_user.code, axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(percent_decode("scopes"), "scopes");
        assert_eq!(percent_decode("example.com%2fscope"), "example.com/scope");
    }
}
