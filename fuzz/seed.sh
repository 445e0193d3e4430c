#!/usr/bin/env bash
# Seeds each target's corpus with the project's own inputs, so fuzzing starts from real
# ones: Compose files (examples/ and the conformance suite), the conformance suite's env
# files, and streams of `capstan run` as a daemon writes them.
set -euo pipefail
cd "$(dirname "$0")"
for target in compose_parse apply_request; do
  mkdir -p "corpus/$target"
  for f in ../examples/*.yaml $(find ../e2e/conformance -name '*.yaml' -o -name '*.yml' -o -name '*.json'); do
    name=$(echo "$f" | tr '/.' '__')
    if [ "$target" = apply_request ]; then
      { echo "seed"; cat "$f"; } > "corpus/$target/$name"
    else
      cp "$f" "corpus/$target/$name"
    fi
  done
done

mkdir -p corpus/env_file
for f in $(find ../e2e/conformance -name '.env' -o -name '*.env'); do
  cp "$f" "corpus/env_file/$(echo "$f" | tr '/.' '__')"
done
printf '%s\n' '# comment' 'export A=1' "B='lit \$A'" 'C="q \"x\" \\n ${A:-d}"' 'D=v # note' 'E' \
  > corpus/env_file/syntax
printf '\xef\xbb\xbfFIRST=1\nexport\tT="a\\tb \\$x \\0101"  # c\nM="one\ntwo"\nS='"'"'lit\n$x'"'"'\n' \
  > corpus/env_file/quotes

# Interpolation: the conformance suite's Compose files, and templates of every operator.
mkdir -p corpus/interpolate
for f in $(find ../e2e/conformance -name '*.yaml' -o -name '*.yml'); do
  cp "$f" "corpus/interpolate/$(echo "$f" | tr '/.' '__')"
done
printf '%s' '${HOME:-d} $HOME ${EMPTY-x} ${UNSET:?why} ${A:+alt} $$ $2a$14$x ${J:-{"a":{"b":1}}} ${A:-${B:-$C}}' \
  > corpus/interpolate/operators

# The target reads its input's first half as a stream, its second half as a recipe.
mkdir -p corpus/run_stream
stream='{"kind":"started","container":"s-web-run-1"}
{"kind":"output","data":"dmFsdWUtMQ=="}
{"kind":"output","stderr":true,"data":"G1szMW1lcnIK"}
{"kind":"alive"}
{"kind":"line","text":"old"}
{"kind":"exit","code":3}
'
printf '%s%s' "$stream" "$stream" > corpus/run_stream/records
printf '%s%s' '{"kind":"error","message":"gone"}' '{"kind":"error","message":"gone"}' \
  > corpus/run_stream/unfinished
