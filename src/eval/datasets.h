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
  kHarmfulPrompts  // behaviour / harmful-prompt list: every row is unsafe (recall only)
};
const char* label_kind_name(LabelKind kind);

struct DatasetInfo {
  std::string name;           // registry key, e.g. "toxicchat"
  LabelKind kind;
  std::string label_meaning;  // one line: what label 1 means for this set
  std::string licence;        // e.g. "MIT", "CC-BY-NC-4.0"
  bool evaluation_only;       // non-commercial licence: evaluate with it, never train or ship on it
  std::string folder;         // under the data directory
  // Reads the files of `folder` under `data_dir`; throws guardkit::Error naming the file on malformed input.
  std::function<std::vector<Example>(const std::filesystem::path& data_dir)> load;
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
