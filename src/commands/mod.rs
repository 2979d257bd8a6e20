pub mod node;
pub mod server;
