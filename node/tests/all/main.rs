//! Integration tests of the node crate, against real wasmtime (one binary, as STYLE.md asks).

mod function;
mod runtime;
