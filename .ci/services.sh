#!/usr/bin/env bash
# Start PostgreSQL, Redis and RabbitMQ on 127.0.0.1 when they are down; install them when missing.
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v redis-server  >/dev/null || need_apt+=(redis-server)
command -v rabbitmq-server >/dev/null || need_apt+=(rabbitmq-server)
command -v chromium >/dev/null || need_apt+=(chromium)  # headless, for the admin console's browser test
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)      # pydub transcodes and analyses through ffmpeg and ffprobe
command -v npm >/dev/null || need_apt+=(nodejs npm)     # `make ipfs-node` installs the local IPFS node from npm
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  rabbitmq-server -detached
fi

rabbitmq_accepts() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
for _ in $(seq 1 90); do
  pg_isready -h 127.0.0.1 -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && rabbitmq_accepts && break
  sleep 1
done
pg_isready -h 127.0.0.1
redis-cli -h 127.0.0.1 ping
# The AMQP listener opens late in the boot; await_startup also waits for the node's applications.
rabbitmqctl -q await_startup --timeout 60
rabbitmq_accepts || { echo "RabbitMQ does not accept connections on 127.0.0.1:5672" >&2; exit 1; }
echo "RabbitMQ accepts connections on 127.0.0.1:5672"
