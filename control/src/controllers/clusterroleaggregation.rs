//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` gets, as
//! its rules, the rules of every other ClusterRole its selectors match, in name order and
//! without repeats (upstream's `clusterrole-aggregation`). This is how `admin`, `edit` and
//! `view` grow when a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-edit` is
//! added, and shrink when it goes. A change to any ClusterRole runs it again for every
//! aggregated one, so chains (`view` into `edit` into `admin`) settle.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllersConfig, Error};
use crate::objects::{label_selector, selects};

struct Context {
    client: kube::Client,
    roles: Store<ClusterRole>,
}

pub async fn run(client: kube::Client, config: ControllersConfig) {
    let api: Api<ClusterRole> = Api::all(client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let roles = controller.store();
    let aggregated = roles.clone();
    let controller = controller.watches(api, watcher::Config::default(), move |_role| {
        aggregated
            .state()
            .iter()
            .filter(|r| r.aggregation_rule.is_some())
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect::<Vec<_>>()
    });
    let context = Arc::new(Context { client, roles });
    super::drive(
        controller,
        "clusterrole-aggregation",
        reconcile,
        context,
        config.retry,
    )
    .await;
}

#[tracing::instrument(name = "reconcile", skip_all, fields(clusterrole = %role.name_any()))]
async fn reconcile(role: Arc<ClusterRole>, context: Arc<Context>) -> Result<Action, Error> {
    let Some(rule) = &role.aggregation_rule else {
        return Ok(Action::await_change());
    };
    let mut selectors = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        selectors.push(label_selector(selector).map_err(|e| Error::Invalid(e.to_string()))?);
    }
    let mut sources: Vec<Arc<ClusterRole>> = context
        .roles
        .state()
        .into_iter()
        .filter(|other| other.name_any() != role.name_any())
        .filter(|other| selectors.iter().any(|s| selects(s, &other.metadata)))
        .collect();
    sources.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for source in sources {
        for rule in source.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    if role.rules.as_ref().unwrap_or(&Vec::new()) == &rules {
        return Ok(Action::await_change());
    }
    let api: Api<ClusterRole> = Api::all(context.client.clone());
    api.patch(
        &role.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"rules": rules})),
    )
    .await?;
    Ok(Action::await_change())
}
