//! Bosun's node agent, the kubelet of Bosun.
//!
//! It registers a Node, renews its Lease, watches the pods bound to it through the API server
//! and runs each container in a wasmtime sandbox. It talks to the control plane only over HTTP;
//! it never opens the datastore.
//!
//! Built so far: [`runtime`], the seam between the agent and what runs a container, with its
//! wasmtime implementation (WASI preview 1 modules and preview 2 command components, memory
//! and CPU limits, stop at any instruction), and [`logs`], container log files in the CRI
//! format. The agent itself, image pulling, volumes and the log server arrive with the rest
//! of the node-agent issue.

pub mod logs;
pub mod runtime;
