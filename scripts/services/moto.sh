#!/usr/bin/env bash
# Start two moto servers on 127.0.0.1 as the AWS Batch (+ S3, IAM, EC2) endpoint:
#   * container-less (jobs succeed at once; for the API contract), and
#   * docker mode (jobs run in real containers on the private dockerd of dockerd.sh,
#     host networking so a job reaches the endpoints on 127.0.0.1).
# Idempotent.  Writes <repo>/.services/moto.env with MOTO_URL and MOTO_DOCKER_URL
# (MOTO_DOCKER_URL is left out when dockerd is not running).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
home="$repo/.services/moto"
moto="$repo/.venv/bin/moto_server"
"$repo/scripts/apt-ensure" curl
mkdir -p "$home"
exec 9>"$home/.lock"
flock 9

if [ ! -x "$moto" ]; then
    echo "moto.sh: $moto missing (run scripts/bootstrap all)" >&2
    exit 1
fi

free_port() {
    "$repo/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

answers() { curl -fsS -o /dev/null "http://127.0.0.1:$1/moto-api/" 2>/dev/null; }

# start NAME USE_DOCKER [ENV...]: a server whose port is kept in $home/NAME.port
start() {
    local name=$1 use_docker=$2
    shift 2
    local port
    port="$(cat "$home/$name.port" 2>/dev/null || true)"
    if [ -n "$port" ] && answers "$port"; then
        echo "$port"
        return
    fi
    port="$(free_port)"
    env "$@" setsid "$moto" -H 127.0.0.1 -p "$port" >"$home/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$home/$name.pid"
    for _ in $(seq 1 150); do
        answers "$port" && break
        sleep 0.2
    done
    if ! answers "$port"; then
        echo "moto.sh: moto ($name) did not answer on port $port; log:" >&2
        tail -n 30 "$home/$name.log" >&2 || true
        exit 1
    fi
    curl -fsS -X POST -H 'Content-Type: application/json' \
        -d "{\"batch\": {\"use_docker\": $use_docker}}" "http://127.0.0.1:$port/moto-api/config" >/dev/null
    echo "$port" >"$home/$name.port"
    echo "$port"
}

plain="$(start plain false)"
{
    echo "MOTO_URL=http://127.0.0.1:$plain"
    echo "AWS_ACCESS_KEY_ID=testing"
    echo "AWS_SECRET_ACCESS_KEY=testing"
    echo "AWS_DEFAULT_REGION=us-east-1"
} >"$home/env.new"

docker_env="$repo/.services/docker.env"
if [ -f "$docker_env" ]; then
    docker_host="$(sed -n 's/^DOCKER_HOST=//p' "$docker_env")"
    if DOCKER_HOST="$docker_host" docker version >/dev/null 2>&1; then
        docked="$(start docker true DOCKER_HOST="$docker_host" MOTO_DOCKER_NETWORK_MODE=host)"
        echo "MOTO_DOCKER_URL=http://127.0.0.1:$docked" >>"$home/env.new"
    fi
fi
mv "$home/env.new" "$repo/.services/moto.env"
