#!/usr/bin/env bash
# Starts or stops `capstan serve` in the background, log under .data/capstan.log.
#
# The API is the Unix socket $CAPSTAN_SOCKET (as root: /run/capstan/capstan.sock, the
# CLI's default; otherwise .data/run/capstan.sock, and the Makefile points CAPSTAN_SERVER
# at it). The socket is 0660, of group $CAPSTAN_SOCKET_GROUP (default: root as root, else
# your primary group): whoever may open it is an admin. Metrics and probes, without
# authentication, on $CAPSTAN_METRICS_LISTEN (default 127.0.0.1:7879).
#
# etcd (scripts/etcd.sh) takes only clients with a certificate of its CA: capstan reaches it
# at https://127.0.0.1:$ETCD_PORT with $DATA/pki/client.pem. DATA defaults to .data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.data}
BIN=${CAPSTAN_BIN:-target/release/capstan}
if [ "$(id -u)" = 0 ]; then
  SOCKET=${CAPSTAN_SOCKET:-/run/capstan/capstan.sock}
  GROUP=${CAPSTAN_SOCKET_GROUP:-root}
else
  SOCKET=${CAPSTAN_SOCKET:-$PWD/$DATA/run/capstan.sock}
  GROUP=${CAPSTAN_SOCKET_GROUP:-$(id -gn)}
fi
METRICS=${CAPSTAN_METRICS_LISTEN:-127.0.0.1:7879}
mkdir -p "$DATA"
chmod 0750 "$DATA"
PKI="$(cd "$DATA" && pwd)/pki"
pidfile="$DATA/capstan.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
stop() {
  if running; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 100); do running || break; sleep 0.1; done
    echo "capstan stopped"
  fi
  rm -f "$pidfile"
}
case "${1:-start}" in
  start)
    if running; then
      if tr '\0' ' ' <"/proc/$(cat "$pidfile")/cmdline" | grep -q -- "--etcd-cert "; then
        echo "capstan already running (pid $(cat "$pidfile"))"; exit 0
      fi
      # Started by an older `make up`, against a plain-HTTP etcd.
      echo "capstan (pid $(cat "$pidfile")) has no etcd client certificate: restarting it"
      stop
    fi
    [ -f "$PKI/client.pem" ] || { echo "error: no $PKI/client.pem: start etcd first (scripts/etcd.sh start)" >&2; exit 1; }
    umask 027
    nohup "$BIN" serve --etcd "https://127.0.0.1:${ETCD_PORT:-2379}" --etcd-cacert "$PKI/ca.pem" \
      --etcd-cert "$PKI/client.pem" --etcd-key "$PKI/client-key.pem" --socket "$SOCKET" --socket-group "$GROUP" \
      --metrics-listen "$METRICS" >>"$DATA/capstan.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 100); do
      if curl -fsS --unix-socket "$SOCKET" http://capstan/readyz >/dev/null 2>&1; then
        echo "capstan serving on unix://$SOCKET (group $GROUP; metrics on $METRICS; pid $(cat "$pidfile"), log $DATA/capstan.log)"
        [ "$SOCKET" = /run/capstan/capstan.sock ] || echo "  export CAPSTAN_SERVER=unix://$SOCKET"
        exit 0
      fi
      running || { echo "error: capstan exited; see $DATA/capstan.log" >&2; tail -5 "$DATA/capstan.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "error: capstan did not become ready; see $DATA/capstan.log" >&2; exit 1 ;;
  stop) stop ;;
esac
