//! Integration tests of the control plane against real datastores: SQLite files in temporary
//! directories and the PostgreSQL named by `BOSUN_TEST_POSTGRES_URL` (scripts/test.sh starts a
//! throwaway one). One binary, one module per area, as in wasmtime's `tests/all`.

mod apiserver;
mod store;
mod store_postgres;
mod support;
