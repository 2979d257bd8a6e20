//! Bosun's control plane: the state store, the Kubernetes API server on top of it, and (as
//! their issues land) the scheduler and controllers, which are clients of that API.
//!
//! Entry point: [`server::run`] with a [`server::ServerConfig`], which is what `bosun server`
//! calls. The parts:
//! - [`store`]: objects and revisions in PostgreSQL or SQLite, push-based watch, compaction,
//!   secrets encrypted at rest, cluster secrets sealed with the cluster token.
//! - [`apiserver`]: the HTTPS front (today health and readiness; the Kubernetes REST surface
//!   is the API-server issue).
//! - [`pki`]: the cluster CA and the certificates it issues.
//!
//! Nothing here talks to a node agent's internals: nodes are API clients like everyone else.

pub mod apiserver;
pub mod events;
pub mod leader;
pub mod pki;
pub mod scheduler;
pub mod server;
pub mod store;
