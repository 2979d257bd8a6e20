//! Bosun's node agent, the kubelet of Bosun.
//!
//! It registers a Node, renews its Lease, watches the pods bound to it through the API server
//! and runs each container in a wasmtime sandbox. It talks to the control plane only over HTTP;
//! it never opens the datastore.
//!
//! - [`agent`]: the Node object, its Lease, and one worker per pod;
//! - [`credentials`]: the node's own identity, a `system:node:NAME` client certificate got
//!   through a CertificateSigningRequest and renewed before it expires;
//! - [`images`]: pulls Wasm artifacts from OCI registries into a content-addressed cache;
//! - [`runtime`]: the seam between the agent and what runs a container, with its wasmtime
//!   implementation (WASI preview 1 modules and preview 2 command components, memory and CPU
//!   limits, stop at any instruction);
//! - [`gateway`]: the function gateway on `--function-port`, and the activator that holds
//!   requests of a Function at zero replicas;
//! - [`network`]: a network namespace and an IP per pod, the bridge, routes to other nodes'
//!   pods, and the rules for guests' sockets;
//! - [`logs`]: container log files in the CRI format, and the log server;
//! - [`metrics`]: what the node measures of its function containers (`/metrics/functions`);
//! - [`objects`]: the ConfigMaps, Secrets and downward API fields a pod's containers read;
//! - [`volumes`]: emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes as
//!   directories preopened in the guest.

pub mod agent;
pub mod credentials;
pub mod gateway;
pub mod images;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod objects;
pub mod runtime;
pub mod volumes;
