#!/usr/bin/env bash
# Seeds each target's corpus with the project's own Compose files (examples/ and the
# conformance suite), so fuzzing starts from real stacks.
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
