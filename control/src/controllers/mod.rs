//! The controllers: API clients that drive the cluster's objects toward what their specs ask,
//! run together as one controller manager under leader election (one active per cluster).
//!
//! - [`nodeipam`]: gives each Node a `spec.podCIDR` out of the cluster CIDR.

pub mod nodeipam;

use std::collections::BTreeSet;

use bosun_api::cidr::Ipv4Cidr;

use crate::events::RecorderOptions;

/// The controllers' names, as `--disable-controllers` takes them.
pub const ALL: &[&str] = &["nodeipam"];

/// What the controller manager runs and how.
#[derive(Debug, Clone)]
pub struct ControllersConfig {
    /// Controllers not to run (names from [`ALL`]).
    pub disabled: BTreeSet<String>,
    /// The block pod IPs come from; each node gets a sub-block of it.
    pub cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's block (24: 254 pods per node).
    pub node_cidr_mask_size: u8,
    pub events: RecorderOptions,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        Self {
            disabled: BTreeSet::new(),
            cluster_cidr: "10.88.0.0/16".parse().expect("a valid block"),
            node_cidr_mask_size: 24,
            events: RecorderOptions::default(),
        }
    }
}

impl ControllersConfig {
    /// Checks the names in `disabled` and that node blocks fit in the cluster block.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(unknown) = self.disabled.iter().find(|n| !ALL.contains(&n.as_str())) {
            return Err(format!(
                "unknown controller {unknown:?} (controllers: {})",
                ALL.join(", ")
            ));
        }
        if self.node_cidr_mask_size < self.cluster_cidr.prefix() || self.node_cidr_mask_size > 30 {
            return Err(format!(
                "a node block of /{} does not fit the cluster CIDR {} (use a prefix between /{} and /30)",
                self.node_cidr_mask_size,
                self.cluster_cidr,
                self.cluster_cidr.prefix()
            ));
        }
        Ok(())
    }
}

/// Runs every enabled controller until they all end (they end only if the client is gone).
pub async fn run(client: kube::Client, config: ControllersConfig) {
    let mut tasks = tokio::task::JoinSet::new();
    if !config.disabled.contains("nodeipam") {
        tasks.spawn(nodeipam::run(client.clone(), config.clone()));
    }
    while tasks.join_next().await.is_some() {}
}
