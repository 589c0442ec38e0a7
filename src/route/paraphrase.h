// SafeRoute's data augmentation (papers.md §1.2): an LLM paraphrases each (prompt, response) of the router's training
// data, one paraphrase per item per round for 7 rounds; outputs that do not parse are dropped; the harmfulness label is
// copied from the source item, and the routing label t is re-derived by scoring the paraphrases with both guards
// (route::build_feature_cache). Any augment::LlmBackend works (local Llama, OpenAI-compatible server).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "augment/llm_backend.h"
#include "route/features.h"

namespace guardkit::route {

enum class ParaphraseStyle {
  Code,   // the authors' paraphrase.py instruction, byte for byte (typo "Parapharse", double space, \n separators)
  Paper,  // the prompt printed in the paper (Fig. 10): curly quotes, one line "prompt: {p} response: {r}"
};

// The user message asking for a paraphrase. A missing response is written as "None", as Python formats it.
std::string paraphrase_instruction(const std::string& prompt, const std::optional<std::string>& response,
                                   ParaphraseStyle style = ParaphraseStyle::Code);

struct ParsedParaphrase {
  std::string prompt;
  std::optional<std::string> response;  // "None" -> no response
};
// The authors' regex `prompt:\s*(.*?)\s*response:\s*(.*)` (DOTALL, first match) with both groups stripped;
// nullopt when the text does not match.
std::optional<ParsedParaphrase> parse_paraphrase(const std::string& text);

struct ParaphraseOptions {
  int rounds = 7;
  ParaphraseStyle style = ParaphraseStyle::Code;
  double temperature = 1.0;  // vLLM SamplingParams(temperature=1.0, max_tokens=1024) in the authors' code
  int max_tokens = 1024;
  size_t batch_size = 64;    // requests per backend call
  uint64_t seed = 0;         // request seed = f(seed, round, item): reruns are reproducible where the backend is
  bool progress = true;
};

struct ParaphraseStats {
  size_t requested = 0, parsed = 0, dropped_unparsable = 0, failed_requests = 0;
};

// One round of paraphrases of `sources` (ids "<source id>#para<round>", labels copied). Items whose output does not
// parse, or whose request failed, are dropped and counted.
std::vector<LabeledExample> paraphrase_round(augment::LlmBackend& backend, const std::vector<LabeledExample>& sources,
                                             int round, const ParaphraseOptions& options,
                                             ParaphraseStats* stats = nullptr);

// All rounds. With `out_dir`, round r is written to out_dir/round<r>.jsonl (eval example schema) as it finishes and
// rounds already there are read back instead of regenerated (resume after a kill).
std::vector<LabeledExample> paraphrase_examples(augment::LlmBackend& backend,
                                                const std::vector<LabeledExample>& sources,
                                                const ParaphraseOptions& options = {},
                                                const std::filesystem::path& out_dir = {},
                                                ParaphraseStats* stats = nullptr);

// The resumable form `guardkit route paraphrase` uses: one request per (round, source item), rounds in order; each
// answered request becomes one line of the JSONL `log`, appended as its batch finishes:
//   {"id": "<source id>#para<round>", "source_id", "round", "label", "status": "parsed", "prompt", "response"}
//   {"id", "source_id", "round", "label", "status": "unparsable", "text": <the raw output>}
// A rerun skips every id already in the log (a torn last line is redone); failed requests are not logged, so the
// next run retries them. Source ids must be unique.
struct ParaphraseLogResult {
  std::vector<LabeledExample> parsed;  // every parsed row of the log, in log order (this run's and earlier runs')
  size_t logged = 0;                   // lines in the log now
  size_t unparsable = 0;               // unparsable lines in the log now
  size_t skipped = 0;                  // requests skipped because an earlier run logged them
  ParaphraseStats this_run;
};
ParaphraseLogResult paraphrase_to_log(augment::LlmBackend& backend, const std::vector<LabeledExample>& sources,
                                      const ParaphraseOptions& options, const std::filesystem::path& log);

}  // namespace guardkit::route
