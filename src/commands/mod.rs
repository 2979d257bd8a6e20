pub mod node;
pub mod push;
pub mod server;
pub mod up;
