#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and benchmarks: `scripts/postgres.sh start DIR PORT` creates a
# cluster in DIR owned by the `postgres` user, listening on 127.0.0.1:PORT only, and prints its
# URL; `scripts/postgres.sh stop DIR` stops it; `scripts/postgres.sh crash DIR` stops it with
# `pg_ctl stop -m immediate`, which is a crash as far as durability is concerned. Default durability settings (fsync, synchronous
# commit) are kept: the crash tests rely on them. pg_stat_statements is loaded so that tests can
# count the statements a component runs.
set -euo pipefail
cmd=${1:?usage: postgres.sh start DIR PORT | stop DIR | crash DIR}
dir=${2:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bin/postgres" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql" >&2; exit 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
    port=${3:?port}
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 \
            -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    as_postgres "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
    ;;
crash)
    as_postgres "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null
    ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
