#!/usr/bin/env bash
# Regenerates docs/TABLETOP.md: the three papers reproduced end to end on the public data in ../shared/data, with
# models trained on this machine (nothing is downloaded).
#   1. SafeRoute — the default small and large guards (`guardkit bootstrap`) on held-out sets: SafeRoute against
#      small-only, large-only, random, entropy, calibration baselines and the oracle; trade-off plots.
#   2. HarmAug — a tiny Llama chat model trained here is jailbroken with the affirmative prefix, answers its own
#      instructions, the large guard labels them, and a small student is distilled with vs without them (same steps).
#   3. BiasJailbreak — the same tiny model as the target, with and without BiasDefense, and with a guard check.
# Every step resumes: rerun after a kill. Work files go to $TABLETOP_WORK (default tabletop_work/); the report and its
# plots to docs/TABLETOP.md and docs/tabletop/. Needs a build (./scripts/build.sh). Took 12 min 48 s on 2 idle cores (29 Nov 2026), 8 of them the bootstrap.
# The models come from `guardkit bootstrap --profile full` (TABLETOP_PROFILE=quick reuses README command (1)'s).
# TABLETOP_QUICK=1 shrinks every size (a smoke run of a few minutes; its numbers mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

GK_BIN=${GUARDKIT:-./build/guardkit}
# All cores by default; on a machine shared with other heavy jobs set TABLETOP_THREADS=1 (OpenMP threads on preempted
# cores lose most of their time at barriers: docs/BENCHMARKS.md).
GK() { "$GK_BIN" --threads "${TABLETOP_THREADS:-0}" "$@"; }
W=${TABLETOP_WORK:-tabletop_work}
MODELS=${TABLETOP_MODELS:-models/default}
DOCS=${TABLETOP_DOCS:-docs}
EVAL_SETS=(openai_moderation toxicchat harmbench_classifier_val beavertails_evaluation simplesafetytests)
TRAIN_SETS=(advbench_behaviors strongreject gptfuzz_questions xstest_prompts gptfuzz_responses jailbreakbench
            dices_990 xstest_completions_harm)
if [ "${TABLETOP_QUICK:-0}" = 1 ]; then
  EVAL_LIMIT=40; GEN_ARGS=(--steps 20); GEN_COUNT=16; DISTILL_STEPS=10; RT_LIMIT=2; RT_TRIALS=1; ROUTER_EPOCHS=20
  BOOT_ARGS=(--max-train 300 --max-eval 40 --large-epochs 1 --small-epochs 1 --router-epochs 20 --mlm-steps 10)
else
  EVAL_LIMIT=400; GEN_ARGS=(); GEN_COUNT=400; DISTILL_STEPS=300; RT_LIMIT=20; RT_TRIALS=3; ROUTER_EPOCHS=300
  # The full profile: a large guard far enough ahead of the small one for routing to matter (an hour or more).
  BOOT_ARGS=(--profile "${TABLETOP_PROFILE:-full}")
fi
mkdir -p "$W" "$DOCS/tabletop"
[ -x "$GK_BIN" ] || { echo "tabletop: $GK_BIN not found; run ./scripts/build.sh first" >&2; exit 2; }
started=$(date +%s)
step() { echo; echo "== tabletop: $*" >&2; }

# ---- 0. The default models (the large and small guards and the router) ----------------------------------------
if [ ! -f "$MODELS/models.json" ]; then
  step "training the default models into $MODELS (guardkit bootstrap)"
  GK bootstrap --out "$MODELS" "${BOOT_ARGS[@]}"
fi

# ---- 1. SafeRoute ------------------------------------------------------------------------------------------------
step "SafeRoute: features of the small guard and scores of both guards on the held-out sets"
mkdir -p "$W/route"
tests=()
for set in "${EVAL_SETS[@]}"; do
  cache="$W/route/$set.safetensors"
  # Through the models file: the guards run with the max_length they were trained and are served with (64).
  [ -f "$cache" ] || GK route features --models "$MODELS/models.json" --small small --large large --data "$set" \
    --limit "$EVAL_LIMIT" --batch 32 --out "$cache"
  tests+=("$cache")
done
router_train="$MODELS/work/router_features.safetensors"
[ -f "$router_train" ] || { echo "tabletop: $router_train missing (bootstrap keeps it in $MODELS/work)" >&2; exit 1; }
step "SafeRoute: router and baselines, budget and ε sweeps"
GK route eval --router "$MODELS/router" --train "$router_train" --reference "$router_train" --test "${tests[@]}" \
  --threshold default --out "$W/route/eval"
cp "$W"/route/eval/*.svg "$DOCS/tabletop/" 2>/dev/null || true

# ---- 2. HarmAug ----------------------------------------------------------------------------------------------------
GEN="$W/generator"
if [ ! -f "$GEN/model.safetensors" ]; then
  step "HarmAug: training a tiny Llama chat model here (the generator and the red-team target)"
  GK train-generator --out "$GEN" "${GEN_ARGS[@]}"
fi
step "HarmAug: instructions from the jailbroken generator (affirmative prefix), responses, teacher labels"
A="$W/harmaug"
mkdir -p "$A"
GK augment generate --llm "$GEN" --out "$A/instructions.jsonl" --count "$GEN_COUNT" --batch 16 --seed 1
GK augment respond --llm "$GEN" --instructions "$A/instructions.jsonl" --out "$A/responses.jsonl" --batch 16
GK augment label --teacher "$MODELS/large" --instructions "$A/instructions.jsonl" \
  --responses "$A/responses.jsonl" --out "$A/labelled.jsonl" --batch 32
# Same student config, initialisation, seed and number of optimizer steps; the only difference is the HarmAug rows.
# The students are evaluated as the default small guard is served: max_length 64, through a models file.
cat > "$A/students.json" <<JSON
{"models": [{"name": "student_without", "kind": "classifier", "path": "student_without/final", "max_length": 64},
            {"name": "student_with", "kind": "classifier", "path": "student_with/final", "max_length": 64}]}
JSON
for arm in without with; do
  data=("${TRAIN_SETS[@]}")
  [ "$arm" = with ] && data+=("$A/labelled.jsonl")
  if [ ! -f "$A/student_$arm/final/model.safetensors" ]; then
    step "HarmAug: distilling the small student $arm augmentation ($DISTILL_STEPS steps)"
    GK distill --config "$MODELS/small/config.json" --tokenizer "$MODELS/small" --data "${data[@]}" \
      --out "$A/student_$arm" --max-steps "$DISTILL_STEPS" --batch-size 32 --micro-batch 32 --max-length 64 \
      --lr 5e-4 --warmup 30 --seed 42
  fi
  GK eval --models "$A/students.json" --model "student_$arm" --data "${EVAL_SETS[@]}" --limit "$EVAL_LIMIT" --bootstrap 200 \
    --json "$A/eval_$arm.json" --markdown "$A/eval_$arm.md" --predictions "$A/predictions_$arm" --no-progress
done

# ---- 3. BiasJailbreak and BiasDefense -------------------------------------------------------------------------------
step "BiasJailbreak: the tiny model as target, without and with BiasDefense, and with a guard check"
GK redteam defend --target "$GEN" --models "$MODELS/models.json" --check-guard large --judge-guard large \
  --behaviours jailbreakbench --limit "$RT_LIMIT" --trials "$RT_TRIALS" --temperature 1 --seed 1 --max-tokens 64 \
  --out "$W/redteam"
cp "$W/redteam/report.svg" "$DOCS/tabletop/redteam.svg"

# ---- The report ----------------------------------------------------------------------------------------------------
minutes=$(( ($(date +%s) - started + 59) / 60 ))
{
  echo "# Tabletop: SafeRoute, HarmAug and BiasJailbreak reproduced on this machine"
  echo
  echo "Regenerate with \`scripts/tabletop.sh\` (this run: $(date -u +%Y-%m-%d), $(nproc) cores, ${minutes} min for the"
  echo "steps not already done; $(git rev-parse --short HEAD 2>/dev/null || echo '?')). Every model here was trained on this machine"
  echo "from \`../shared/data\`; nothing was downloaded. The numbers are what this run measured, good or bad."
  [ "${TABLETOP_QUICK:-0}" = 1 ] && echo && echo "**Quick smoke run (TABLETOP_QUICK=1): tiny sizes, the numbers mean nothing.**"
  echo
  echo "Training sets (commercial-use licences): ${TRAIN_SETS[*]}."
  echo "Held-out evaluation sets (never trained on; ToxicChat and BeaverTails are non-commercial, evaluation only):"
  echo "${EVAL_SETS[*]} (first $EVAL_LIMIT rows of each)."
  echo
  echo "## 1. SafeRoute"
  echo
  echo "Small guard: \`$MODELS/small\`; large guard: \`$MODELS/large\`; router: \`$MODELS/router\` (trained by"
  echo "\`guardkit bootstrap\` on its router split). Command:"
  echo
  echo '```'
  echo "guardkit route eval --router $MODELS/router --train $router_train --test <held-out caches> --out $W/route/eval"
  echo '```'
  echo
  sed 's/^#/##/' "$W/route/eval/results.md"
  echo
  for svg in "$W"/route/eval/*.svg; do
    [ -f "$svg" ] && echo "![$(basename "$svg" .svg)](tabletop/$(basename "$svg"))"
  done
  echo
  echo "## 2. HarmAug"
  echo
  echo "Generator: a tiny Llama chat model trained here (\`guardkit train-generator --out $GEN\`), jailbroken with the"
  echo "affirmative prefix \"I have an idea for a prompt:\". Kept instructions: $(wc -l < "$A/instructions.jsonl"),"
  echo "labelled rows (prompt-only and prompt+response, teacher = large guard): $(wc -l < "$A/labelled.jsonl")."
  echo
  echo "A few generated instructions (verbatim):"
  echo
  # the "prompt" string of each JSON line, escaped quotes and all, then unescaped
  head -n 5 "$A/instructions.jsonl" | sed -n 's/.*"prompt": *"\(\([^"\\]\|\\.\)*\)".*/- \1/p' | sed 's/\\"/"/g; s/\\n/ /g'
  echo
  echo "Students: the small guard's configuration from scratch, $DISTILL_STEPS optimizer steps of 32, same seed; the"
  echo "only difference is the HarmAug rows (soft teacher labels, 0.5·(CE + KL)); original rows use their labels (CE)."
  echo
  echo "### Without augmentation"
  echo
  cat "$A/eval_without.md"
  echo
  echo "### With HarmAug augmentation"
  echo
  cat "$A/eval_with.md"
  echo
  echo "## 3. BiasJailbreak and BiasDefense"
  echo
  echo "Target: the same tiny chat model, sampled at temperature 1 (seed 1), $RT_TRIALS trials per prompt, $RT_LIMIT JailbreakBench"
  echo "goals × the built-in keyword pairs. It was trained to refuse or answer fiction requests at random, alike for every"
  echo "keyword (\`guardkit train-generator\`), so a gap near zero is the expected honest outcome."
  echo
  sed 's/^#/##/' "$W/redteam/report.md" | grep -v '^!\[success by keyword\](report.svg)$'
  echo
  echo "![BiasJailbreak](tabletop/redteam.svg)"
} > "$DOCS/TABLETOP.md.tmp"
mv "$DOCS/TABLETOP.md.tmp" "$DOCS/TABLETOP.md"
echo "tabletop: wrote $DOCS/TABLETOP.md" >&2
