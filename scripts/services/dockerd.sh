#!/usr/bin/env bash
# Start a Docker daemon (Debian docker.io) on a private socket for the container tests,
# and make the offline base image `bridge-base:bookworm` (debootstrap minbase, imported;
# no registry is reachable from these machines).  Idempotent.
#
# Writes <repo>/.services/docker.env with DOCKER_HOST and BRIDGE_BASE_IMAGE.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$repo/.services"
home="${DOCKERD_HOME:-$(cd "$repo/.services" && pwd -P)/docker}"
sock="$home/docker.sock"
image="bridge-base:bookworm"
export DOCKER_HOST="unix://$sock"

"$repo/scripts/apt-ensure" docker.io debootstrap

mkdir -p "$home"
# Several worktrees run this script at once: one at a time, or a second run would
# see a half-built root (debootstrap has /proc mounted in it) and import that.
exec 9>"$home/.lock"
flock 9
if ! docker version >/dev/null 2>&1; then
    setsid dockerd --data-root "$home/data" --exec-root "$home/exec" -H "$DOCKER_HOST" \
        --pidfile "$home/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
        --storage-driver overlay2 >"$home/dockerd.log" 2>&1 </dev/null 9>&- &
    for _ in $(seq 1 150); do
        docker version >/dev/null 2>&1 && break
        sleep 0.2
    done
    if ! docker version >/dev/null 2>&1; then
        echo "dockerd.sh: dockerd did not answer on $sock; log:" >&2
        tail -n 30 "$home/dockerd.log" >&2 || true
        exit 1
    fi
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
    rootfs="$home/rootfs-bookworm"
    if [ ! -f "$rootfs/.complete" ]; then
        mirror="$(awk '/^deb / && /debian/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)"
        if [ -z "$mirror" ]; then
            mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
        fi
        echo "dockerd.sh: building a minbase Debian root from ${mirror:-deb.debian.org}" >&2
        partial="$rootfs.partial"
        rm -rf "$partial" "$rootfs"
        debootstrap --variant=minbase bookworm "$partial" "${mirror:-http://deb.debian.org/debian}" >"$home/debootstrap.log" 2>&1
        touch "$partial/.complete"
        mv "$partial" "$rootfs"
    fi
    tar -C "$rootfs" --one-file-system --exclude=./.complete --exclude=./proc/* --exclude=./sys/* -c . \
        | docker import - "$image" >/dev/null
fi

cat >"$repo/.services/docker.env" <<ENV
DOCKER_HOST=$DOCKER_HOST
BRIDGE_BASE_IMAGE=$image
ENV
