//! One module per subcommand; `client` holds what the kubectl-like ones share.

pub mod apply;
pub mod client;
pub mod function;
pub mod get;
pub mod kubeconfig;
pub mod logs;
pub mod node;
pub mod push;
pub mod server;
pub mod tenant;
pub mod up;
