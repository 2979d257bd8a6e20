//! The signers of certificates.k8s.io that Bosun's cluster CA signs for.

/// Client certificates for the API server: the subject's CN is the user, each O a group.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// Nodes' client certificates: `system:node:NAME` in exactly `system:nodes`.
pub const NODE_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
