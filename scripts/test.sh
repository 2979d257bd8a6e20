#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing, starts a throwaway
# PostgreSQL on a loopback port, builds the Wasm guests the tests run (scripts/guests.sh), then
# runs formatting, lints and every test of the workspace, and last a smoke run of scripts/up.sh
# (the README's run command) with the hello example.
# Prints how long each phase took. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
root=$(pwd)

phase_start=$(date +%s)
phase() {
    local now; now=$(date +%s)
    printf '==> %s (previous phase took %ss)\n' "$1" "$((now - phase_start))"
    phase_start=$now
}

phase "checking the machine"
need_apt=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null || need_apt+=(util-linux)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v nft >/dev/null || need_apt+=(nftables)
install_missing "${need_apt[@]}"
require_cargo

phase "starting a throwaway PostgreSQL"
work=$(mktemp -d /tmp/bosun-test.XXXXXX)
chmod 755 "$work"
pgdata="$work/pg"
cleanup() { "$root/scripts/postgres.sh" stop "$pgdata"; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export BOSUN_TEST_POSTGRES_URL=$("$root/scripts/postgres.sh" start "$pgdata" "$port")
echo "PostgreSQL at $BOSUN_TEST_POSTGRES_URL"

phase "cargo fmt --check"
cargo fmt --all --check
find guests wasm-sdk examples -name '*.rs' -not -path '*/target/*' -print0 | xargs -0 rustfmt --edition 2024 --check

phase "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

phase "building the guests (guests/, wasm32-wasip2)"
"$root/scripts/guests.sh"

phase "cargo test"
cargo test --workspace --locked "$@"

phase "smoke test of scripts/up.sh (the README's run command) with the hello example"
smoke="$work/up"
mkdir -p "$smoke"
# The binary the tests used (a `cargo build` here would rebuild much of the tree: the tests'
# dev-dependencies unify other crate features).
BOSUN_BIN="$root/target/debug/bosun" scripts/up.sh --data-dir "$smoke" --port 0 --agent-port 0 --bridge bsmoke0 \
    --cluster-cidr 10.87.0.0/17 --service-cidr 10.87.128.0/17 >"$smoke/out" 2>"$smoke/err" &
up_pid=$!
stop_up() {
    kill -TERM "$up_pid" 2>/dev/null; wait "$up_pid" || true
    # What the node leaves on the host: the pods' namespaces, the bridge, the proxy's table.
    for record in "$smoke"/network/ipam/*; do
        [ -f "$record" ] || continue
        ip netns del "bosun-$(cat "$record")" 2>/dev/null || true
    done
    ip link del bsmoke0 2>/dev/null || true
    nft delete table ip bsmoke0-proxy 2>/dev/null || true
}
for _ in $(seq 600); do grep -q '^kubeconfig: ' "$smoke/out" && break; sleep 1; done
grep -q '^kubeconfig: ' "$smoke/out" || echo "bosun up did not print its kubeconfig within 600 s" >&2
export KUBECONFIG="$smoke/admin.kubeconfig"
# The log is read whole before it is searched: `kubectl logs | grep -q` under pipefail fails
# whenever grep has already quit when kubectl writes its next line (SIGPIPE).
logs=""
if ! kubectl apply -f examples/hello/job.yaml \
    || ! kubectl wait --for=condition=complete job/hello --timeout=120s \
    || ! logs=$(kubectl logs job/hello) \
    || ! grep -q 'Hello, Bosun user!' <<<"$logs"; then
    echo "the smoke test failed; the job's log was: $logs" >&2
    echo "scripts/up.sh said:" >&2
    cat "$smoke/out" >&2; tail -50 "$smoke/err" >&2
    stop_up; exit 1
fi
stop_up
echo "bosun up ran the hello example"

phase "done"
