#!/usr/bin/env bash
# Builds the local demo and test images FROM scratch with the static busybox. No registry.
set -euo pipefail
cd "$(dirname "$0")/.."
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp images/web/Dockerfile images/web/start.sh "$ctx/"
cp /bin/busybox "$ctx/busybox"
for version in 1 2; do
  if ! DOCKER_BUILDKIT=0 docker build -q --build-arg VERSION=$version -t capstan-demo/web:$version "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2; exit 1
  fi
  echo "built capstan-demo/web:$version"
done
