#!/usr/bin/env bash
# Start an sshd on 127.0.0.1:2222 for the tests (Debian 12, as root).
#
# Idempotent and fast when it already runs.  Installs openssh-server when missing
# (apt-get update only then).  Generates a host key, a client key, an
# authorized_keys and a known_hosts file under <repo>/.services/sshd/, and writes
# <repo>/.services/sshd/env (SSH_HOST, SSH_PORT, SSH_USER, SSH_KEY, SSH_KNOWN_HOSTS)
# for the tests.  Only key authentication is accepted.
#
#   scripts/services/sshd.sh          start (or check) the server
#   scripts/services/sshd.sh stop     stop it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SVC="$ROOT/.services/sshd"
PORT="${BRIDGE_TEST_SSH_PORT:-2222}"
HOST=127.0.0.1
CONF="$SVC/sshd_config"
PIDFILE="$SVC/sshd.pid"

log() { echo "sshd.sh: $*" >&2; }
pid_alive() { [[ -s "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [[ "${1:-start}" == "stop" ]]; then
    if pid_alive; then kill "$(cat "$PIDFILE")"; fi
    exit 0
fi

if pid_alive && [[ -f "$SVC/env" ]]; then
    exit 0
fi

if ! dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q "install ok installed"; then
    log "installing openssh-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi

mkdir -p "$SVC" /run/sshd
chmod 0700 "$SVC"
[[ -f "$SVC/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C bridge-test-host -f "$SVC/host_ed25519"
[[ -f "$SVC/client_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C bridge-test-client -f "$SVC/client_ed25519"
cp "$SVC/client_ed25519.pub" "$SVC/authorized_keys"
printf '[%s]:%s %s\n' "$HOST" "$PORT" "$(cut -d' ' -f1,2 "$SVC/host_ed25519.pub")" >"$SVC/known_hosts"
# A known_hosts that names the right host with a different key (for the refusal test).
[[ -f "$SVC/wrong_ed25519" ]] || ssh-keygen -q -t ed25519 -N "" -C wrong -f "$SVC/wrong_ed25519"
printf '[%s]:%s %s\n' "$HOST" "$PORT" "$(cut -d' ' -f1,2 "$SVC/wrong_ed25519.pub")" >"$SVC/known_hosts.wrong"

cat >"$CONF" <<EOF
# Written by scripts/services/sshd.sh: a loopback sshd for the tests.
Port $PORT
ListenAddress $HOST
HostKey $SVC/host_ed25519
PidFile $PIDFILE
AuthorizedKeysFile $SVC/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 32
MaxStartups 32:30:64
Subsystem sftp internal-sftp
EOF

log "starting sshd on $HOST:$PORT"
/usr/sbin/sshd -f "$CONF" -E "$SVC/sshd.log"
for _ in $(seq 50); do
    pid_alive && break
    sleep 0.1
done
pid_alive || { log "sshd did not start; see $SVC/sshd.log"; exit 1; }

cat >"$SVC/env" <<EOF
SSH_HOST=$HOST
SSH_PORT=$PORT
SSH_USER=root
SSH_KEY=$SVC/client_ed25519
SSH_KNOWN_HOSTS=$SVC/known_hosts
SSH_KNOWN_HOSTS_WRONG=$SVC/known_hosts.wrong
EOF
