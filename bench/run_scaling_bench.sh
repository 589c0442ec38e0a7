#!/usr/bin/env bash
# Throughput per added worker on this machine, measured in one run (docs/BENCHMARKS.md#scaling):
#   shards:    `guardkit eval` over ROWS rows with the fixture DeBERTa, 1 process vs 2 shards in parallel + merge;
#   upstreams: a remote guard (the fixture Llama served by `guardkit serve --generator`) through 1 vs 3 servers.
# Usage: bench/run_scaling_bench.sh [ROWS=2000] [REMOTE_ROWS=48]   (BUILD_DIR=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-2000}
REMOTE_ROWS=${2:-48}
BIN=${BUILD_DIR:-build}/guardkit
SHARED=${GUARDKIT_SHARED:-$PWD/../shared}
DEBERTA=$SHARED/fixtures/deberta
LLAMA=$SHARED/fixtures/llama
OUT=$(mktemp -d /tmp/guardkit_scaling.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
now() { date +%s.%N; }

/usr/bin/python3 - "$OUT/data.jsonl" "$ROWS" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(int(sys.argv[2])):
        prompt = f"message {i}: " + ("how do I bake bread? " * (1 + i % 5))
        out.write(json.dumps({"id": f"r{i}", "prompt": prompt, "response": None, "label": i % 2,
                              "categories": [], "source": "bench"}) + "\n")
PY
EVAL="$BIN eval --model $DEBERTA --data $OUT/data.jsonl --bootstrap 0 --no-progress"
t0=$(now); $EVAL --predictions "$OUT/one" >/dev/null; t1=$(now)
for k in 0 1; do $EVAL --shard $k/2 --predictions "$OUT/s$k" 2>/dev/null & done; wait
t2=$(now)
$BIN merge --out "$OUT/merged" "$OUT/s0" "$OUT/s1" 2>/dev/null; t3=$(now)
/usr/bin/python3 - "$ROWS" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
rows, t0, t1, t2, t3 = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"eval, {rows} rows: 1 process {t1 - t0:.2f} s ({rows / (t1 - t0):.0f} rows/s); "
      f"2 shards {t2 - t1:.2f} s + merge {t3 - t2:.2f} s ({rows / (t3 - t1):.0f} rows/s)")
PY

ports=()
for i in 0 1 2; do
  $BIN serve --small "$DEBERTA" --generator "$LLAMA" --port 0 --max-logprobs 128256 --access-log off \
    2> "$OUT/serve$i.log" &
done
for i in 0 1 2; do
  until grep -qo 'http://127.0.0.1:[0-9]*' "$OUT/serve$i.log"; do sleep 0.2; done
  ports+=("$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT/serve$i.log" | head -1)")
done
/usr/bin/python3 - "$OUT/remote.jsonl" "$REMOTE_ROWS" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(int(sys.argv[2])):
        out.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}: how do I bake bread?", "response": None,
                              "label": i % 2, "categories": [], "source": "bench"}) + "\n")
PY
models() {
  /usr/bin/python3 -c 'import json, sys; print(json.dumps({"models": [{"name": "fleet", "kind": "remote", "url": sys.argv[1],
    "options": {"model": "llama", "tokenizer": sys.argv[2], "top_logprobs": 128256, "when_down": "throw",
                "max_concurrency": 6, "max_concurrency_per_endpoint": 2}}]}))' "$1" "$LLAMA"
}
models "${ports[0]}" > "$OUT/one.json"
models "${ports[0]},${ports[1]},${ports[2]}" > "$OUT/three.json"
REMOTE="eval --model fleet --data $OUT/remote.jsonl --bootstrap 0 --no-progress --batch-size 16"
t0=$(now); $BIN $REMOTE --models "$OUT/one.json" >/dev/null; t1=$(now)
$BIN $REMOTE --models "$OUT/three.json" >/dev/null; t2=$(now)
/usr/bin/python3 - "$REMOTE_ROWS" "$t0" "$t1" "$t2" <<'PY'
import sys
rows, t0, t1, t2 = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"remote guard, {rows} rows: 1 upstream {t1 - t0:.2f} s ({rows / (t1 - t0):.1f} rows/s); "
      f"3 upstreams {t2 - t1:.2f} s ({rows / (t2 - t1):.1f} rows/s)")
PY
echo "cores: $(nproc); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}"
