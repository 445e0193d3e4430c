#!/usr/bin/env bash
# Runs every test binary of the workspace from one build: the unit and integration tests of
# api, controller and capstan one after the other, then the end-to-end binaries (e2e/tests/*.rs)
# side by side, E2E_JOBS at a time (default 3: more starves the timing-sensitive tests of CPU on
# 2 cores). Each e2e binary starts its own etcd and daemons
# on free ports and names its stacks uniquely, so they can share the engine; engine_restart
# stops dockerd, so it runs alone, after the others.
#
# ONLY=unit runs only the first group, ONLY=e2e only the second; E2E_SKIP names e2e binaries
# not to run (`E2E_SKIP=engine_restart` on an engine others use); PACKAGES limits the build
# (`-p capstan-e2e`; default the whole workspace, as `make test` builds it).
#
# Every binary's output is kept in $TEST_LOGS/<binary>.log (default target/test-logs) and its
# wall time in $TEST_LOGS/times; a failing binary's log is printed, and any failure fails the
# run (after every binary ran). Extra arguments go to every test binary (a test-name filter,
# `--ignored`, ...).
#
# Why not `cargo test --workspace`: it runs the binaries one at a time, and the e2e ones spend
# most of their time waiting on the engine, so side by side they take a third of the time.
# The build is the same as `cargo test`'s (same packages, same features), so nothing is
# compiled twice.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
JOBS=${E2E_JOBS:-3}
LOGS=${TEST_LOGS:-target/test-logs}
# Run alone, after the others: healing times the crash-loop back-off between the engine's
# start events, which a busy engine stretches and shrinks (one slow start shortens the next
# gap); engine_restart stops the Docker engine.
ALONE=(healing engine_restart)
# The slowest first, so that the last to start is not the longest (measured, see the Makefile).
SLOW_FIRST=(rollouts conformance image_builds refusals traffic one_off_runs
  store_consistency observability sidecars leadership scaling crash_consistency pull)

rm -rf "$LOGS"
mkdir -p "$LOGS"
: >"$LOGS/times"

# name<TAB>package folder<TAB>executable of every test binary the build made.
# shellcheck disable=SC2086 # PACKAGES is a list of cargo arguments.
"$CARGO" test ${PACKAGES:---workspace} --no-run --message-format=json 2>"$LOGS/build.log" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        pkg = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        print(m["target"]["name"], pkg, m["executable"], sep="\t")
' >"$LOGS/binaries" || { cat "$LOGS/build.log"; exit 1; }

# run NAME DIR EXECUTABLE [ARGS]: one binary, its output in its log, its time and exit code in
# $LOGS/times.
run() {
  local name=$1 dir=$2 exe=$3 start rc=0
  shift 3
  start=$(date +%s)
  (cd "$dir" && "$exe" "$@") >"$LOGS/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$LOGS/times"
  # One write per binary (they run side by side): its outcome, then libtest's own closing
  # line, so that the counts of every binary show in the run's output as `cargo test` shows them.
  printf '%-28s %s in %ss\n%s\n' "$name" "$([ "$rc" = 0 ] && echo ok || echo "FAILED ($rc)")" \
    "$(($(date +%s) - start))" \
    "$(grep -h '^test result:' "$LOGS/$name.log" || echo 'test result: none printed')"
}

unit=() e2e=()
while IFS=$'\t' read -r name pkg exe; do
  case $pkg in
    e2e) e2e+=("$name	$exe") ;;
    *) unit+=("$pkg-$name	$pkg	$exe") ;;
  esac
done <"$LOGS/binaries"

[ "${ONLY:-}" = e2e ] && unit=()
[ "${ONLY:-}" = unit ] && e2e=()
[ ${#unit[@]} = 0 ] || echo "unit and integration tests (api, controller, capstan):"
for u in "${unit[@]+"${unit[@]}"}"; do
  IFS=$'\t' read -r name dir exe <<<"$u"
  run "$name" "$dir" "$exe" "$@"
done

# The e2e binaries in order: the slow ones first, then the rest; the ALONE ones last.
declare -A e2e_exe=()
for e in "${e2e[@]+"${e2e[@]}"}"; do
  [[ " ${E2E_SKIP:-} " == *" ${e%%	*} "* ]] || e2e_exe[${e%%	*}]=${e#*	}
done
order=()
for n in "${SLOW_FIRST[@]}"; do [ -n "${e2e_exe[$n]:-}" ] && order+=("$n"); done
for n in $(printf '%s\n' "${!e2e_exe[@]}" | sort); do
  [[ " ${SLOW_FIRST[*]} ${ALONE[*]} " == *" $n "* ]] || order+=("$n")
done

[ ${#order[@]} = 0 ] || echo "end-to-end tests, $JOBS binaries at a time:"
for n in "${order[@]+"${order[@]}"}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run "e2e-$n" e2e "${e2e_exe[$n]}" "$@" &
done
wait
for n in "${ALONE[@]}"; do
  [ -n "${e2e_exe[$n]:-}" ] && run "e2e-$n" e2e "${e2e_exe[$n]}" "$@"
done

failed=$(awk -F'\t' '$2 != 0 { print $1 }' "$LOGS/times")
for f in $failed; do
  echo "==================== $f (log: $LOGS/$f.log) ===================="
  cat "$LOGS/$f.log"
done
# The tests' own counts, summed over every binary's closing line.
sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' \
  "$LOGS"/*.log | awk '{ p += $1; f += $2; i += $3 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' |
  tee "$LOGS/total"
# A run that found nothing to run is not a green run (unless a filter asked for few).
if [ $# = 0 ] && grep -q '^tests: 0 passed' "$LOGS/total"; then
  echo "no test ran: is the build's list of test binaries empty? ($LOGS/binaries)"
  exit 1
fi
[ -z "$failed" ] || { echo "failed: $failed"; exit 1; }
