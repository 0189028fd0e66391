#!/usr/bin/env bash
# Start an S3-compatible server (npm s3rver 3.7.1) on 127.0.0.1 for Fusion's tests and
# benchmarks, and install the system packages those need (FUSE, s3fs, rclone).
# Idempotent: returns quickly when everything is already installed and running.
#
# Environment: S3RVER_PORT (4568), S3RVER_HOME (<repo>/.services/s3rver).
# Credentials of the server: S3RVER / S3RVER.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
port="${S3RVER_PORT:-4568}"
home="${S3RVER_HOME:-$repo/.services/s3rver}"
data="$home/data"
log="$home/s3rver.log"
pidfile="$home/s3rver.pid"

answers() {
    # Any HTTP answer (s3rver replies 403/200 to an anonymous GET /) means it is up.
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/" 2>/dev/null
}

need_apt=()
for pair in fusermount3:fuse3 pkg-config:pkg-config s3fs:s3fs rclone:rclone node:nodejs npm:npm curl:curl; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
[ -e /usr/include/fuse3/fuse_lowlevel.h ] || need_apt+=(libfuse3-dev)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "s3rver.sh: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if answers; then
    exit 0
fi

mkdir -p "$home" "$data"
if [ ! -x "$home/node_modules/.bin/s3rver" ]; then
    echo "s3rver.sh: installing s3rver@3.7.1 into $home" >&2
    (cd "$home" && npm install --no-audit --no-fund --loglevel=error s3rver@3.7.1 >/dev/null)
fi

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    :  # running but not answering yet: wait below
else
    # Without the legacy provider, node >= 17 breaks ListObjectsV2 continuation tokens.
    NODE_OPTIONS=--openssl-legacy-provider setsid "$home/node_modules/.bin/s3rver" \
        --address 127.0.0.1 --port "$port" --directory "$data" --silent \
        >"$log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
fi

for _ in $(seq 1 150); do
    if answers; then
        exit 0
    fi
    sleep 0.1
done
echo "s3rver.sh: s3rver did not answer on 127.0.0.1:$port; log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
