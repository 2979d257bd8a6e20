//! Bosun's node agent, the kubelet of Bosun.
//!
//! It registers a Node, renews its Lease, watches the pods bound to it through the API server
//! and runs each container in a wasmtime sandbox. It talks to the control plane only over HTTP;
//! it never opens the datastore. The agent arrives with its own issue; until then this crate
//! holds only this description so that the workspace has the shape of `ARCHITECTURE.md`.
