#!/usr/bin/env bash
# From a fresh machine to a running cluster with the examples ready to apply:
# - builds bosun (release; BOSUN_PROFILE=dev for a debug build; BOSUN_BIN=PATH uses that binary
#   instead) and the Wasm examples
#   (scripts/guests.sh, which installs the guest toolchain);
# - starts a local OCI registry on localhost:5000 (Debian's docker-registry, installed if
#   missing, storage in DATA_DIR/registry) unless one answers there, and pushes the examples
#   to it with `bosun push`;
# - runs `bosun up --insecure-registry localhost:5000 ARGS…` (server and node in this process)
#   until Ctrl-C or SIGTERM, which stop the registry too.
# Usage: scripts/up.sh [flags of bosun up]   (as root: pods get their own network)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
root=$(pwd)
profile=${BOSUN_PROFILE:-release}

data_dir=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --data-dir) data_dir=${args[$((i + 1))]:-} ;;
        --data-dir=*) data_dir=${args[$i]#--data-dir=} ;;
    esac
done
if [ -z "$data_dir" ]; then
    data_dir=${BOSUN_DATA_DIR:-}
fi
if [ -z "$data_dir" ]; then
    if [ "$(id -u)" = 0 ]; then data_dir=/var/lib/bosun; else data_dir=$HOME/.local/share/bosun; fi
fi

need_apt=()
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v nft >/dev/null || need_apt+=(nftables)
install_missing "${need_apt[@]}"
require_cargo

if [ -n "${BOSUN_BIN:-}" ]; then
    bosun=$BOSUN_BIN
    echo "==> using $bosun"
else
    echo "==> building bosun ($profile)"
    cargo build --locked --profile "$profile"
    bin_dir=$profile
    [ "$profile" = dev ] && bin_dir=debug
    bosun="$root/target/$bin_dir/bosun"
fi

echo "==> building the examples"
scripts/guests.sh

registry_up() { python3 -c 'import urllib.request; urllib.request.urlopen("http://localhost:5000/v2/", timeout=1)' 2>/dev/null; }
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; true; }
trap cleanup EXIT
if registry_up; then
    echo "==> a registry already answers on localhost:5000"
else
    echo "==> starting a registry on localhost:5000 (storage in $data_dir/registry)"
    mkdir -p "$data_dir/registry"
    cat > "$data_dir/registry/config.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $data_dir/registry/data
http:
  addr: 127.0.0.1:5000
YAML
    docker-registry serve "$data_dir/registry/config.yml" >"$data_dir/registry/log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 100); do
        registry_up && break
        sleep 0.1
    done
fi
for example in hello c-hello web config sidecar; do
    "$bosun" push "guests/target/examples/$example.wasm" "localhost:5000/$example:v1" --insecure
done

echo "==> bosun up"
# In the background, so that this script can pass on Ctrl-C or SIGTERM as SIGTERM (a
# script's own background jobs ignore SIGINT) and still stop the registry afterwards.
"$bosun" up --insecure-registry localhost:5000 "$@" &
bosun_pid=$!
trap 'kill -TERM "$bosun_pid" 2>/dev/null' INT TERM
set +e
wait "$bosun_pid"
status=$?
while kill -0 "$bosun_pid" 2>/dev/null; do
    wait "$bosun_pid"
    status=$?
done
exit "$status"
