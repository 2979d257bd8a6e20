//! Bosun's control plane: the state store, the Kubernetes API server on top of it, and the
//! scheduler and the controllers, which are clients of that API.
//!
//! Entry point: [`server::run`] with a [`server::ServerConfig`], which is what `bosun server`
//! calls. The parts:
//! - [`store`]: objects and revisions in PostgreSQL or SQLite, push-based watch, compaction,
//!   secrets encrypted at rest, cluster secrets sealed with the cluster token.
//! - [`apiserver`]: the Kubernetes API over HTTPS: discovery, the generic REST verbs for every
//!   registered kind, admission, watch, Tables, event expiry.
//! - [`scheduler`]: places pending pods on nodes through the API.
//! - [`controllers`]: the controller manager (for now node IPAM: each Node's podCIDR).
//! - [`leader`]: leader election through a Lease, so one scheduler (and one controller
//!   manager) is active per cluster.
//! - [`objects`]: what the scheduler and the controllers read alike from objects: label
//!   selectors, controller references, pod readiness.
//! - [`events`]: a rate-limited, aggregating recorder of core/v1 Events.
//! - [`telemetry`]: the process's Prometheus series for the store, the scheduler, the
//!   controllers and leader election.
//! - [`pki`]: the cluster CA and the certificates it issues.
//!
//! Nothing here talks to a node agent's internals: nodes are API clients like everyone else.

pub mod apiserver;
pub mod controllers;
pub mod events;
pub mod leader;
pub mod objects;
pub mod pki;
pub mod quota;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod telemetry;
