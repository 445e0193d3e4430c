#!/bin/sh
# Serves the replica's hostname at / (the healthcheck fetches it) and the image version at
# /version. httpd as PID 1 would ignore SIGTERM, so this shell traps it and stops at once.
echo "$(hostname)" > /www/index.html
echo "${CAPSTAN_DEMO_VERSION}" > /www/version
httpd -f -p 80 -h /www &
pid=$!
trap 'kill "$pid"; exit 0' TERM INT
wait "$pid"
