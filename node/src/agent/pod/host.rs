//! The real [`Host`] of pod workers: the agent, with its API client, image cache, pod network,
//! runtimes, log index and event writer.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod, PodStatus, Probe};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use serde_json::json;

use super::super::{Agent, probe};
use super::{Host, Launch, LaunchError, Published, Settings, launch};
use crate::gateway::Routes;
use crate::logs::server::LogIndex;
use crate::metrics::Containers;
use crate::objects::{ConfigError, Sources};

#[async_trait::async_trait]
impl Host for Agent {
    fn settings(&self) -> Settings {
        Settings {
            node_ip: self.node_ip,
            pods_dir: self.pods_dir.clone(),
            backoff: self.config.backoff,
            first_status_delay: self.config.first_status_delay,
            volume_sync_period: self.config.volume_sync_period,
        }
    }

    fn logs(&self) -> &LogIndex {
        &self.logs
    }

    fn containers(&self) -> &Containers {
        &self.containers
    }

    fn routes(&self) -> &Routes {
        &self.routes
    }

    async fn launch(
        &self,
        pod: &Pod,
        container: &Container,
        log: PathBuf,
    ) -> Result<Launch, LaunchError> {
        let plan = launch::plan(self, pod, container, log).await?;
        launch::start(self, plan).await
    }

    async fn probe(
        &self,
        probe: &Probe,
        container: &Container,
        pod_ip: Ipv4Addr,
    ) -> Result<(), probe::Failure> {
        probe::check(probe, container, pod_ip).await
    }

    async fn sync_volumes(
        &self,
        pod: &Pod,
        dir: &Path,
        pod_ip: Ipv4Addr,
    ) -> Result<(), ConfigError> {
        let mut sources = Sources::new(
            &self.client,
            pod,
            self.node_ip.to_string(),
            pod_ip.to_string(),
        )
        .with_tokens(&self.tokens);
        crate::volumes::refresh(&mut sources, dir, pod).await
    }

    async fn publish(&self, pod: &Pod, status: &PodStatus) -> Published {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = Patch::Merge(json!({ "status": status }));
        match api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Published::Written,
            Err(kube::Error::Api(e)) if e.code == 404 => Published::PodGone,
            Err(error) => {
                tracing::warn!(pod = %name, %error, "cannot write the pod's status");
                Published::Failed
            }
        }
    }

    async fn delete(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(error) => tracing::warn!(pod = %name, %error, "cannot delete the pod"),
        }
    }

    async fn detach_network(&self, uid: &str) {
        self.network().detach(uid).await;
    }

    fn network_fallback(&self) -> Option<String> {
        self.network().fallback_reason().map(str::to_string)
    }

    fn event(
        &self,
        regarding: ObjectReference,
        kind: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        Agent::event(self, regarding, kind, reason, action, note);
    }
}
