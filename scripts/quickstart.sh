#!/usr/bin/env bash
# README command (1): installs every dependency, builds guardkit, trains the default models from the public data in
# ../shared/data when they are not there yet (`guardkit bootstrap`, the quick profile: aimed at 15 minutes on 2 cores), then runs the main
# job: example prompts and responses scored through SafeRoute (small guard, router, large guard) with the decisions
# printed. With --serve it then starts the guard server on the defaults (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
serve=0
for arg in "$@"; do
  case "$arg" in
    --serve) serve=1 ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# //'; exit 0 ;;
    *) echo "unknown option: $arg (only --serve)" >&2; exit 2 ;;
  esac
done
./scripts/install-deps.sh
BUILD_TARGETS=guardkit_cli ./scripts/build.sh  # the binary only: tests and benchmarks are built by command (2)
GK=./build/guardkit
if [ ! -f models/default/models.json ]; then
  "$GK" bootstrap --out models/default
fi
"$GK" check --models models/default/models.json --model saferoute --examples
if [ "$serve" = 1 ]; then
  exec "$GK" serve --models models/default/models.json --host 127.0.0.1 --port 8080
fi
