#!/usr/bin/env bash
# Start an OCI registry (Debian docker-registry 2.8) on 127.0.0.1 for the environment
# builds: images built for a target are pushed ("frozen") here and pulled by the nodes.
# Docker treats 127.0.0.0/8 registries as insecure by default, so plain HTTP works.
# Idempotent: returns quickly when the registry already answers.
#
# Environment: REGISTRY_PORT (5005), REGISTRY_HOME (<repo>/.services/registry).
# Writes <repo>/.services/registry.env with BRIDGE_REGISTRY=127.0.0.1:<port>.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
port="${REGISTRY_PORT:-5005}"
mkdir -p "$repo/.services"
home="${REGISTRY_HOME:-$(cd "$repo/.services" && pwd -P)/registry}"

"$repo/scripts/apt-ensure" docker-registry curl

answers() {
    curl -sf -o /dev/null -m 2 "http://127.0.0.1:$port/v2/" 2>/dev/null
}

mkdir -p "$home/data"
exec 9>"$home/.lock"
flock 9
if ! answers; then
    cat >"$home/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $home/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
    setsid /usr/bin/docker-registry serve "$home/config.yml" >"$home/registry.log" 2>&1 </dev/null 9>&- &
    echo $! >"$home/registry.pid"
    for _ in $(seq 1 100); do
        answers && break
        sleep 0.2
    done
    if ! answers; then
        echo "registry.sh: the registry did not answer on 127.0.0.1:$port; log:" >&2
        tail -n 30 "$home/registry.log" >&2 || true
        exit 1
    fi
fi

cat >"$repo/.services/registry.env" <<ENV
BRIDGE_REGISTRY=127.0.0.1:$port
ENV
