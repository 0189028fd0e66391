#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1:5433 for the tests (Debian 12, as root).
#
# Idempotent and fast when it already answers.  Installs Debian's postgresql when
# missing.  The cluster lives in /var/tmp/converged-bridge-postgres (the postgres
# user must be able to reach it, which a checkout under /root does not allow); the
# tests read the connection URL from <repo>/.services/postgres/env
# (BRIDGE_TEST_POSTGRES_URL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SVC="/var/tmp/converged-bridge-postgres"
PORT=5433
ENV_FILE="$ROOT/.services/postgres/env"
URL="postgresql://bridge:bridge@127.0.0.1:$PORT/postgres"

log() { echo "postgres.sh: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"

ready() { runuser -u postgres -- "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

mkdir -p "$SVC"
chown postgres:postgres "$SVC"
if ! ready; then
    if [[ ! -f "$SVC/data/PG_VERSION" ]]; then
        log "initialising a cluster in $SVC/data"
        runuser -u postgres -- "$BIN/initdb" -D "$SVC/data" -A trust -U postgres >/dev/null
    fi
    runuser -u postgres -- "$BIN/pg_ctl" -D "$SVC/data" -l "$SVC/server.log" -w -t 60 \
        -o "-h 127.0.0.1 -p $PORT -k $SVC -c fsync=off -c max_connections=200" start >/dev/null
fi
runuser -u postgres -- psql -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tc \
    "SELECT 1 FROM pg_roles WHERE rolname='bridge'" | grep -q 1 \
    || runuser -u postgres -- psql -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
        -c "CREATE ROLE bridge LOGIN SUPERUSER PASSWORD 'bridge'"
mkdir -p "$(dirname "$ENV_FILE")"
echo "BRIDGE_TEST_POSTGRES_URL=$URL" > "$ENV_FILE"
log "ready at 127.0.0.1:$PORT"
