#!/usr/bin/env bash
# Starts or stops a single-node etcd on loopback, data under .data/etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=.data
PORT=${ETCD_PORT:-2379}
PEER=${ETCD_PEER_PORT:-2380}
mkdir -p "$DATA"
pidfile="$DATA/etcd.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "${1:-start}" in
  start)
    if running; then echo "etcd already running (pid $(cat "$pidfile"))"; exit 0; fi
    nohup etcd --name capstan --data-dir "$DATA/etcd" \
      --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
      --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
      --initial-cluster "capstan=http://127.0.0.1:$PEER" >"$DATA/etcd.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      if ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$PORT" endpoint health >/dev/null 2>&1; then
        echo "etcd running on 127.0.0.1:$PORT (pid $(cat "$pidfile"), log $DATA/etcd.log)"; exit 0
      fi
      sleep 0.1
    done
    echo "error: etcd did not become healthy; see $DATA/etcd.log" >&2; exit 1 ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; echo "etcd stopped"; fi
    rm -f "$pidfile" ;;
esac
