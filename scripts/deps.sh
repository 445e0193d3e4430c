#!/usr/bin/env bash
# Installs what capstan needs from Debian, if it is missing: etcd, static busybox (for the
# local images), protoc and the well-known protos (etcd-client compiles etcd's protos), and
# for the pull tests a registry (docker-registry) and htpasswd (apache2-utils).
set -euo pipefail
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v curl >/dev/null || missing+=(curl)
# The etcd TLS test makes its certificates with openssl.
command -v openssl >/dev/null || missing+=(openssl)
command -v prometheus >/dev/null || missing+=(prometheus)
# The pull tests run a real registry on loopback, with htpasswd (bcrypt) auth.
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
if [ "${1:-}" = bench ]; then
  command -v wrk >/dev/null || missing+=(wrk)
  command -v haproxy >/dev/null || missing+=(haproxy)
  # `capstan config` is measured beside Compose 1.29's `docker-compose config`.
  command -v docker-compose >/dev/null || missing+=(docker-compose)
fi
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is not reachable at /var/run/docker.sock; start it first" >&2
  exit 1
fi
