#!/usr/bin/env bash
# A local IPFS node (js-ipfs 0.66.1 from npm) serving Kubo's RPC API on 127.0.0.1, for tests and `make demo`.
#
#   ipfs-node.sh install   npm install from the committed lock file (`make ipfs-node` runs it when that changed)
#   ipfs-node.sh start     start a daemon for $IPFS_PATH on $IPFS_API_PORT, wait until it is ready, print its API address
#   ipfs-node.sh stop      stop that daemon (SIGTERM, SIGKILL after 15 s)
#   ipfs-node.sh status    print the API address and exit 0 while the daemon runs, exit 1 otherwise
#
# Environment: IPFS_PATH (default tools/ipfs-node/.ipfs-repo), IPFS_API_PORT (default 5001, 0 = any free port).
# The PID file and the log sit next to the repo: $IPFS_PATH.pid, $IPFS_PATH.log.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
export IPFS_PATH="${IPFS_PATH:-$here/.ipfs-repo}"
port="${IPFS_API_PORT:-5001}"
pid_file="$IPFS_PATH.pid"
log_file="$IPFS_PATH.log"
jsipfs="$here/node_modules/.bin/jsipfs"
stamp="$here/node_modules/.installed"

# Alive and not a zombie (a killed daemon stays one until init reaps it).
alive() { local state; state="$(ps -o stat= -p "$1" 2>/dev/null)" && [ "${state:0:1}" != Z ]; }
running() { [ -f "$pid_file" ] && alive "$(cat "$pid_file")"; }

case "${1:-}" in
  install)
    # Not `npm ci`: the lock file's optional WebRTC subtree names a GitHub tarball; --omit=optional skips it.
    (cd "$here" && npm install --omit=optional --no-audit --no-fund --loglevel=error)
    touch "$stamp"
    ;;
  start)
    [ -x "$jsipfs" ] || { echo "js-ipfs is not installed: run \`make ipfs-node\`" >&2; exit 1; }
    if running; then cat "$IPFS_PATH/api"; echo; exit 0; fi
    mkdir -p "$(dirname "$IPFS_PATH")"
    # Our daemon died without releasing the repo (SIGKILL, OOM): its lock would block starts for 20 s.
    if [ -f "$pid_file" ]; then rm -rf "$IPFS_PATH/repo.lock" "$pid_file"; fi
    # The init config is applied on every start, so the port of an existing repo can change.
    config="$IPFS_PATH.config.json"
    sed "s|/ip4/127.0.0.1/tcp/5001|/ip4/127.0.0.1/tcp/$port|" "$here/init-config.json" > "$config"
    rm -f "$IPFS_PATH/api"
    : > "$log_file"
    # Preload off: otherwise every added CID is announced to public preload hosts.
    nohup "$jsipfs" daemon --offline --enable-preload=false --init-profile test --init-config "$config" \
      >> "$log_file" 2>&1 < /dev/null &
    echo $! > "$pid_file"
    for _ in $(seq 1 240); do
      if grep -q "Daemon is ready" "$log_file" && [ -s "$IPFS_PATH/api" ]; then cat "$IPFS_PATH/api"; echo; exit 0; fi
      running || { echo "the IPFS daemon exited; its log:" >&2; cat "$log_file" >&2; rm -f "$pid_file"; exit 1; }
      sleep 0.25
    done
    echo "the IPFS daemon was not ready within 60 s; its log: $log_file" >&2
    exit 1
    ;;
  stop)
    if running; then
      pid="$(cat "$pid_file")"
      kill -TERM "$pid"
      for _ in $(seq 1 60); do alive "$pid" || break; sleep 0.25; done
      if alive "$pid"; then kill -KILL "$pid"; rm -rf "$IPFS_PATH/repo.lock"; fi
    fi
    rm -f "$pid_file"
    ;;
  status)
    if running; then cat "$IPFS_PATH/api"; echo; else echo "not running" >&2; exit 1; fi
    ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
