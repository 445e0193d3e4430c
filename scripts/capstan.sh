#!/usr/bin/env bash
# Starts or stops `capstan serve` in the background, log under .data/capstan.log.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=.data
BIN=${CAPSTAN_BIN:-target/release/capstan}
mkdir -p "$DATA"
pidfile="$DATA/capstan.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "${1:-start}" in
  start)
    if running; then echo "capstan already running (pid $(cat "$pidfile"))"; exit 0; fi
    nohup "$BIN" serve --etcd http://127.0.0.1:2379 --listen 127.0.0.1:7878 >>"$DATA/capstan.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      if curl -fsS http://127.0.0.1:7878/readyz >/dev/null 2>&1; then
        echo "capstan serving on 127.0.0.1:7878 (pid $(cat "$pidfile"), log $DATA/capstan.log)"; exit 0
      fi
      running || { echo "error: capstan exited; see $DATA/capstan.log" >&2; tail -5 "$DATA/capstan.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "error: capstan did not become ready; see $DATA/capstan.log" >&2; exit 1 ;;
  stop)
    if running; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 100); do running || break; sleep 0.1; done
      echo "capstan stopped"
    fi
    rm -f "$pidfile" ;;
esac
