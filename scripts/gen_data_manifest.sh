#!/usr/bin/env bash
# Regenerates src/eval/data_sources.inc, the table `guardkit data fetch` downloads from: for every file guardkit's
# dataset registry reads (plus the licence files), the raw GitHub URL it is a byte-identical copy of, its size and
# sha256. Repository, commit and original path are transcribed from shared/data/<folder>/PROVENANCE.md (the script
# checks that the repository and commit appear there); size and sha256 are computed from the copies in shared/data.
# Usage: scripts/gen_data_manifest.sh [SHARED_DATA_DIR]   (default: $GUARDKIT_SHARED/data or ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${GUARDKIT_SHARED:-../shared}/data}"
out=src/eval/data_sources.inc

# target path under the data folder | owner/repo | commit | path in that repository
# Where PROVENANCE.md says the copy came from a third-party repository (a fork or a re-export), that one is used: the
# copy was verified against it.
table=$(cat <<'EOF'
advbench/harmful_behaviors.csv|Matias222/llm-ataques|098262edf85f807224e70ecd87b9d83716bf6b73|data/advbench/harmful_behaviors.csv
advbench/harmful_strings.csv|Matias222/llm-ataques|098262edf85f807224e70ecd87b9d83716bf6b73|data/advbench/harmful_strings.csv
advbench/LICENSE|Matias222/llm-ataques|098262edf85f807224e70ecd87b9d83716bf6b73|LICENSE
beavertails_evaluation/BeaverTails-Evaluation.csv|SwimmingChoi/Value_Analysis|55bb27ee8cae45a778725764b2ca2b79986f51fe|data/BeaverTails-Evaluation.csv
dices/dices_350_expert.json|dmg-illc/JUDGE-BENCH|5a0bf500325029efb5dc8adff2c1e991996f0e78|data/dices/dices_350_expert.json
dices/dices_350_crowdsourced.json|dmg-illc/JUDGE-BENCH|5a0bf500325029efb5dc8adff2c1e991996f0e78|data/dices/dices_350_crowdsourced.json
dices/dices_990.json|dmg-illc/JUDGE-BENCH|5a0bf500325029efb5dc8adff2c1e991996f0e78|data/dices/dices_990.json
dices/LICENSE|dmg-illc/JUDGE-BENCH|5a0bf500325029efb5dc8adff2c1e991996f0e78|data/dices/original_data/LICENSE
do_not_answer/data_en.csv|kunishou/do-not-answer-ja|1380ff2ff5abad07e8aead79caa9757bb8d9f866|datasets/data_en.csv
do_not_answer/do_not_answer_en.csv|kunishou/do-not-answer-ja|1380ff2ff5abad07e8aead79caa9757bb8d9f866|datasets/Instruction/do_not_answer_en.csv
gptfuzz/question_list.csv|sherdencooper/GPTFuzz|1eddeb565740ae311b5f4950492b011a6f866fe7|datasets/questions/question_list.csv
gptfuzz/evaluate.csv|sherdencooper/GPTFuzz|1eddeb565740ae311b5f4950492b011a6f866fe7|datasets/responses_labeled/evaluate.csv
gptfuzz/LICENSE|sherdencooper/GPTFuzz|1eddeb565740ae311b5f4950492b011a6f866fe7|LICENSE
harmbench/harmbench_behaviors_text_all.csv|busycalibrating/AdversariaLLM|a4b57364bc2b0785bd0e6f79eec4948e3991b8b0|data/behavior_datasets/harmbench_behaviors_text_all.csv
harmbench/LICENSE.txt|busycalibrating/AdversariaLLM|2ba5ce8f1646ade975c5c7f7e2b8394f0067b451|data/behavior_datasets/LICENSE.txt
harmbench_classifier_val/harmbench_eval.json|imnotkind/HarmAug|c9d716c43474f80f134d39d5bc9aff0396971791|data/harmbench_eval.json
jailbreakbench_artifacts/LICENSE|JailbreakBench/artifacts|909e68c01d94222b8ad2e397a017e2e12e2adb73|LICENSE
openai_moderation/samples-1680.jsonl.gz|openai/moderation-api-release|f4ab51b5edd3bfbcb349a56324274235b674e0e4|data/samples-1680.jsonl.gz
openai_moderation/LICENSE|openai/moderation-api-release|f4ab51b5edd3bfbcb349a56324274235b674e0e4|LICENSE
simplesafetytests/SimpleSafetyTests - test cases.csv|bertiev/SimpleSafetyTests|d7aee9a9422a5a5488f478fd79c2479c891c0f3b|SimpleSafetyTests - test cases.csv
simplesafetytests/LICENSE|bertiev/SimpleSafetyTests|d7aee9a9422a5a5488f478fd79c2479c891c0f3b|LICENSE
strongreject/strongreject_dataset.csv|busycalibrating/AdversariaLLM|eaee0d37ae91778f8f845ebfbf92ff5dd94ab8d8|data/behavior_datasets/strongreject_dataset.csv
toxicchat/toxic_chat_test.json|dmg-illc/JUDGE-BENCH|5a0bf500325029efb5dc8adff2c1e991996f0e78|data/toxic_chat/toxic_chat_test.json
xstest/xstest_prompts.csv|paul-rottger/exaggerated-safety|d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d|xstest_prompts.csv
xstest/LICENSE|paul-rottger/exaggerated-safety|d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d|LICENSE
arena_hard/arena-hard-v0.1/question.jsonl|lmarena/arena-hard-auto|196f6b826783b3da7310e361a805fa36f0be83f3|data/arena-hard-v0.1/question.jsonl
arena_hard/arena-hard-v2.0/question.jsonl|lmarena/arena-hard-auto|196f6b826783b3da7310e361a805fa36f0be83f3|data/arena-hard-v2.0/question.jsonl
arena_hard/LICENSE|lmarena/arena-hard-auto|196f6b826783b3da7310e361a805fa36f0be83f3|LICENSE
awesome_chatgpt_prompts/prompts.csv|f/awesome-chatgpt-prompts|35e3774e2d676589c560659d07151f47fa956d62|prompts.csv
awesome_chatgpt_prompts/LICENSE|f/awesome-chatgpt-prompts|35e3774e2d676589c560659d07151f47fa956d62|LICENSE
coconot/coconot_contrast_eval.jsonl|allenai/noncompliance|25bf77cc668814360405cdb8197c4368205806c7|data/coconot_contrast_eval.jsonl
coconot/coconot_eval.jsonl|allenai/noncompliance|25bf77cc668814360405cdb8197c4368205806c7|data/coconot_eval.jsonl
coconot/coconot_pref.jsonl|allenai/noncompliance|25bf77cc668814360405cdb8197c4368205806c7|data/coconot_pref.jsonl
coconot/LICENSE|allenai/noncompliance|25bf77cc668814360405cdb8197c4368205806c7|LICENSE
diasafety/train.json|thu-coai/DiaSafety|5106a041b1c7e36f30e02a97c44897a7f2057278|DiaSafety_dataset/train.json
diasafety/val.json|thu-coai/DiaSafety|5106a041b1c7e36f30e02a97c44897a7f2057278|DiaSafety_dataset/val.json
diasafety/test.json|thu-coai/DiaSafety|5106a041b1c7e36f30e02a97c44897a7f2057278|DiaSafety_dataset/test.json
diasafety/LICENSE|thu-coai/DiaSafety|5106a041b1c7e36f30e02a97c44897a7f2057278|LICENSE
dolly_open_qa/chinkara-open_qa.jsonl|prp-e/chinkara-openqa-dataset|6720f527aa8da8318e57f3667ffbba23a8a196bb|chinkara-open_qa.jsonl
gsm8k/test.jsonl|openai/grade-school-math|3101c7d5072418e28b9008a6636bde82a006892c|grade_school_math/data/test.jsonl
gsm8k/train.jsonl|openai/grade-school-math|3101c7d5072418e28b9008a6636bde82a006892c|grade_school_math/data/train.jsonl
gsm8k/LICENSE|openai/grade-school-math|3101c7d5072418e28b9008a6636bde82a006892c|LICENSE
hatecheck/test_suite_cases.csv|paul-rottger/hatecheck-data|d84302298ceeb34f4b0dde2d8a1f4932c2caa612|test_suite_cases.csv
hatecheck/test_suite_annotations.csv|paul-rottger/hatecheck-data|d84302298ceeb34f4b0dde2d8a1f4932c2caa612|test_suite_annotations.csv
hatecheck/LICENSE|paul-rottger/hatecheck-data|d84302298ceeb34f4b0dde2d8a1f4932c2caa612|LICENSE
hh_rlhf_harmless_base/test.jsonl.gz|anthropics/hh-rlhf|354e5c3cb8960630860dd5774a6ac2a58313bf4d|harmless-base/test.jsonl.gz
hh_rlhf_harmless_base/LICENSE|anthropics/hh-rlhf|354e5c3cb8960630860dd5774a6ac2a58313bf4d|LICENSE
ifeval/input_data.jsonl|josejg/instruction_following_eval|0c495b2f95155e8b10acb919ae283bfb4d5be6e2|instruction_following_eval/data/input_data.jsonl
ifeval/LICENSE|josejg/instruction_following_eval|0c495b2f95155e8b10acb919ae283bfb4d5be6e2|LICENSE
nq_open/NQ-open.dev.jsonl|google-research-datasets/natural-questions|fb26a3073b1fe636c97302890a27b491d6530130|nq_open/NQ-open.dev.jsonl
nq_open/NQ-open.efficientqa.dev.1.1.jsonl|google-research-datasets/natural-questions|fb26a3073b1fe636c97302890a27b491d6530130|nq_open/NQ-open.efficientqa.dev.1.1.jsonl
nq_open/NQ-open.efficientqa.test.1.1.jsonl|google-research-datasets/natural-questions|fb26a3073b1fe636c97302890a27b491d6530130|nq_open/NQ-open.efficientqa.test.1.1.jsonl
oasst_prompts/prompt_lottery_en_250_text.jsonl|Open-Assistant/oasst-model-eval|ce935dee6922ec75d5a4006dd1c3595b39a01fdf|model_eval/manual/data/prompt_lottery_en_250_text.jsonl
oasst_prompts/en_100_text.jsonl|Open-Assistant/oasst-model-eval|ce935dee6922ec75d5a4006dd1c3595b39a01fdf|model_eval/manual/data/en_100_text.jsonl
oasst_prompts/LICENSE|Open-Assistant/oasst-model-eval|ce935dee6922ec75d5a4006dd1c3595b39a01fdf|LICENSE
refusal_direction_harmless/harmless_val.json|andyrdt/refusal_direction|9d852fae1a9121c78b29142de733cb1340770cc3|dataset/splits/harmless_val.json
refusal_direction_harmless/harmless_test.json|andyrdt/refusal_direction|9d852fae1a9121c78b29142de733cb1340770cc3|dataset/splits/harmless_test.json
self_instruct/seed_tasks.jsonl|yizhongw/self-instruct|0b26ccaa415992100fa32df62d41b994cf928e23|data/seed_tasks.jsonl
self_instruct/user_oriented_instructions.jsonl|yizhongw/self-instruct|0b26ccaa415992100fa32df62d41b994cf928e23|human_eval/user_oriented_instructions.jsonl
self_instruct/LICENSE|yizhongw/self-instruct|0b26ccaa415992100fa32df62d41b994cf928e23|LICENSE
EOF
)
# The xstest completions and the JailbreakBench artifacts keep their upstream relative paths (PROVENANCE.md).
for model in gpt4 llama2new llama2orig mistralguard mistralinstruct; do
  f=model_completions/xstest_v2_completions_$model.csv
  table+=$'\n'"xstest/$f|paul-rottger/exaggerated-safety|d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d|$f"
done
# The registry's loader reads every artifact .json but attack-info.json.
while IFS= read -r f; do
  table+=$'\n'"jailbreakbench_artifacts/$f|JailbreakBench/artifacts|909e68c01d94222b8ad2e397a017e2e12e2adb73|$f"
done < <(cd "$data/jailbreakbench_artifacts" && find attack-artifacts -name '*.json' ! -name attack-info.json | LC_ALL=C sort)

{
  echo "// Generated by scripts/gen_data_manifest.sh from shared/data (PROVENANCE.md, sizes, sha256). Do not edit."
  echo "// {target path under the data folder, raw download URL, size in bytes, sha256}"
  while IFS='|' read -r target repo commit path; do
    folder=${target%%/*}
    grep -q "$repo" "$data/$folder/PROVENANCE.md" || { echo "$target: $repo not in $folder/PROVENANCE.md" >&2; exit 1; }
    grep -q "$commit" "$data/$folder/PROVENANCE.md" || { echo "$target: $commit not in $folder/PROVENANCE.md" >&2; exit 1; }
    size=$(stat -c %s "$data/$target")
    sha=$(sha256sum "$data/$target" | cut -d' ' -f1)
    url="https://raw.githubusercontent.com/$repo/$commit/${path// /%20}"
    printf '{"%s",\n "%s",\n %s, "%s"},\n' "$target" "$url" "$size" "$sha"
  done <<< "$table"
} > "$out"
echo "wrote $out ($(grep -c '^{' "$out") files)"
