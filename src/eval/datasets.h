// Importers for the labelled safety datasets in shared/data, into the one Example schema (eval/example.h), and a
// registry by name. Each importer gives label 1 = unsafe with the meaning its PROVENANCE.md states; the registry says
// what the label means (prompt harm, response harm, refusal, behaviour list) and whether the licence limits use.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "eval/example.h"

namespace guardkit::eval {

// What the label of a dataset judges.
enum class LabelKind {
  kPromptHarm,     // is the prompt / user text unsafe
  kResponseHarm,   // is the response (in its context) unsafe
  kRefusal,        // did the model refuse (label 1 = refusal); not a harmfulness label
  kHarmfulPrompts, // behaviour / harmful-prompt list: every row is unsafe (recall only)
  kBenign,         // benign prompt set: every row is safe; what it measures is the false-positive rate (over-flagging)
  kPreference      // pairwise preference: label 1 = the reply judged worse of a pair, not an absolute harm label
};
const char* label_kind_name(LabelKind kind);

struct DatasetInfo {
  std::string name;           // registry key, e.g. "toxicchat"
  LabelKind kind;
  std::string label_meaning;  // one line: what label 1 means for this set
  std::string licence;        // e.g. "MIT", "CC-BY-NC-4.0"
  bool evaluation_only;       // never train or ship on it: a non-commercial licence, or the authors ask so (`use`)
  std::string folder;         // under the data directory; empty for a view over other registered sets
  // Reads the files of `folder` under the data directory (given that folder; the data directory itself for a view);
  // throws guardkit::Error naming the file on malformed input.
  std::function<std::vector<Example>(const std::filesystem::path& folder)> load;
  std::string split;          // which upstream files / split the rows are
  std::string use;            // one line: train on it, evaluate only (and why), or what else it is for
  // An everyday benign set: a 1-in-20 slice of its rows (by id) is held out as `everyday_heldout`, and
  // load_training_rows leaves that slice out.
  bool everyday = false;
};

// Every built-in dataset, in a stable order (labelled sets first, then harmful-prompt lists).
const std::vector<DatasetInfo>& dataset_registry();
// nullptr when `name` is not registered.
const DatasetInfo* find_dataset(const std::string& name);

// shared/data (GUARDKIT_SHARED/data when set).
std::filesystem::path default_data_dir();

// A registered name, or a user JSONL file (a path that exists, or ends in .jsonl / .jsonl.gz). Throws a one-line
// error listing the known names when it is neither.
std::vector<Example> load_dataset(const std::string& name_or_path,
                                  const std::filesystem::path& data_dir = default_data_dir());

// The rows of a registered set or a user file to train on: refuses evaluation-only sets and views, and leaves out
// an everyday set's held-out slice.
std::vector<Example> load_training_rows(const std::string& name_or_path,
                                        const std::filesystem::path& data_dir = default_data_dir());

// True for the 1 in 20 examples (by a stable hash of the id) that everyday_heldout evaluates on.
bool in_everyday_heldout_slice(const Example& example);

// True when `name_or_path` names a user file rather than a registered dataset.
bool is_dataset_path(const std::string& name_or_path);

struct DatasetSummary {
  size_t rows = 0;
  size_t positives = 0;
  size_t with_response = 0;
  double positive_rate() const { return rows ? static_cast<double>(positives) / static_cast<double>(rows) : 0.0; }
};
DatasetSummary summarize(const std::vector<Example>& examples);

}  // namespace guardkit::eval
