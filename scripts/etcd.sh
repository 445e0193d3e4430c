#!/usr/bin/env bash
# Starts or stops a single-node etcd on loopback, data under $DATA/etcd (default .data).
#
# Only capstan may talk to it: clients need a certificate of the CA made here on the first
# start (TLS with --client-cert-auth), and so do peers (the peer URL is loopback TLS with
# --peer-client-cert-auth), so no other local user and no container on the host network
# can read or write the desired state. The CA, etcd's certificate and capstan's client
# certificate live in $DATA/pki/ (keys 0600, owned by whoever runs this); later starts
# reuse them. A data folder an older, plain-HTTP `make up` made is served over TLS as is.
#
# Environment: DATA (default .data), ETCD_PORT (2379), ETCD_PEER_PORT (2380).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.data}
PORT=${ETCD_PORT:-2379}
PEER=${ETCD_PEER_PORT:-2380}
PKI="$DATA/pki"
[ -d "$DATA" ] || mkdir -p -m 0750 "$DATA"
pidfile="$DATA/etcd.pid"
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# openssl, quiet unless it fails.
ssl() {
  local out
  out=$(openssl "$@" 2>&1) || { echo "error: openssl $1 failed: $out" >&2; exit 1; }
}

# One certificate signed by the CA: $1 name, $2 subject CN, $3 its extensions.
sign() {
  ssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$1-key.pem" -out "$PKI/$1.csr" -subj "/CN=$2"
  printf '%b' "$3" >"$PKI/$1.ext"
  ssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca-key.pem" \
    -CAcreateserial -out "$PKI/$1.pem" -days 3650 -extfile "$PKI/$1.ext"
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}

# The CA and both certificates, unless an earlier start made them. Keys 0600, the rest 0644.
pki() {
  [ -f "$PKI/ca.pem" ] && [ -f "$PKI/server.pem" ] && [ -f "$PKI/client.pem" ] && return 0
  command -v openssl >/dev/null || { echo "error: etcd's certificates need openssl: run \`make deps\`" >&2; exit 1; }
  [ -d "$PKI" ] || mkdir -m 0755 "$PKI"
  (
    umask 077
    if [ ! -f "$PKI/ca.pem" ]; then
      ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$PKI/ca-key.pem" -out "$PKI/ca.pem" -days 3650 -subj "/CN=capstan etcd CA"
    fi
    sign server 127.0.0.1 "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    sign client capstan "extendedKeyUsage=clientAuth\n"
  )
  chmod 0600 "$PKI"/*-key.pem
  chmod 0644 "$PKI"/ca.pem "$PKI"/server.pem "$PKI"/client.pem
  echo "made etcd's CA and certificates in $PKI"
}

ctl() {
  ETCDCTL_API=3 etcdctl --endpoints "https://127.0.0.1:$PORT" --cacert "$PKI/ca.pem" \
    --cert "$PKI/client.pem" --key "$PKI/client-key.pem" --dial-timeout 1s --command-timeout 2s "$@"
}

# A data folder made over plain HTTP keeps its member's http:// peer URL: move it to https.
peer_url_to_tls() {
  local id url
  read -r id url < <(ctl member list -w simple | awk -F', ' '{print $1, $4}')
  if [ "$url" != "https://127.0.0.1:$PEER" ]; then
    ctl member update "$id" --peer-urls "https://127.0.0.1:$PEER" >/dev/null
    echo "etcd's peer URL moved from $url to https://127.0.0.1:$PEER"
  fi
}

start() {
  pki
  local tls=(--cert-file "$PKI/server.pem" --key-file "$PKI/server-key.pem"
    --trusted-ca-file "$PKI/ca.pem" --client-cert-auth
    --peer-cert-file "$PKI/server.pem" --peer-key-file "$PKI/server-key.pem"
    --peer-trusted-ca-file "$PKI/ca.pem" --peer-client-cert-auth)
  nohup etcd --name capstan --data-dir "$DATA/etcd" \
    --listen-client-urls "https://127.0.0.1:$PORT" --advertise-client-urls "https://127.0.0.1:$PORT" \
    --listen-peer-urls "https://127.0.0.1:$PEER" --initial-advertise-peer-urls "https://127.0.0.1:$PEER" \
    --initial-cluster "capstan=https://127.0.0.1:$PEER" "${tls[@]}" >>"$DATA/etcd.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    if ctl endpoint health >/dev/null 2>&1; then
      peer_url_to_tls
      echo "etcd running on https://127.0.0.1:$PORT, client certificates of $PKI/ca.pem only (pid $(cat "$pidfile"), log $DATA/etcd.log)"
      return 0
    fi
    running || break
    sleep 0.1
  done
  echo "error: etcd did not become healthy; see $DATA/etcd.log" >&2; tail -5 "$DATA/etcd.log" >&2; exit 1
}

stop() {
  if running; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 100); do running || break; sleep 0.1; done
    echo "etcd stopped"
  fi
  rm -f "$pidfile"
}

case "${1:-start}" in
  start)
    if running; then
      if ! ETCDCTL_API=3 etcdctl --endpoints "http://127.0.0.1:$PORT" --dial-timeout 1s endpoint health >/dev/null 2>&1; then
        echo "etcd already running (pid $(cat "$pidfile"))"; exit 0
      fi
      # Started by an older `make up`, without TLS: anyone local could write to it.
      echo "etcd (pid $(cat "$pidfile")) takes clients without a certificate: restarting it with TLS"
      stop
    fi
    start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
