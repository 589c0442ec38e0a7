#include "util/shard.h"

#include <algorithm>
#include <cstdlib>
#include <fmt/format.h>
#include <map>

#include "util/error.h"
#include "util/jsonl.h"
#include "util/paths.h"
#include "util/random.h"

namespace guardkit {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

size_t parse_count(const std::string& text, const std::string& what) {
  if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos)
    fail("--shard: {} '{}' is not a non-negative whole number", what, text);
  return static_cast<size_t>(std::stoull(text));
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

uint64_t stable_row_hash(std::string_view row_id) { return fnv1a64(row_id); }

std::string Shard::label() const { return fmt::format("{}/{}", index, count); }

Shard parse_shard(const std::string& text) {
  if (text.empty()) return {};
  const std::string spec = text == "auto" ? "auto/auto" : text;
  const size_t slash = spec.find('/');
  if (slash == std::string::npos) fail("--shard '{}': expected K/N (e.g. 3/16), K counting from 0, or auto", text);
  std::string index = spec.substr(0, slash), count = spec.substr(slash + 1);
  if (count == "auto") {
    count = environment("SLURM_ARRAY_TASK_COUNT");
    if (count.empty()) fail("--shard {}: N is auto but $SLURM_ARRAY_TASK_COUNT is not set; give N", text);
  }
  Shard shard;
  if (index == "auto") {
    if (const std::string task = environment("SLURM_ARRAY_TASK_ID"); !task.empty()) {
      const std::string min = environment("SLURM_ARRAY_TASK_MIN");
      const size_t id = parse_count(task, "$SLURM_ARRAY_TASK_ID");
      const size_t first = min.empty() ? 0 : parse_count(min, "$SLURM_ARRAY_TASK_MIN");
      if (id < first) fail("--shard: $SLURM_ARRAY_TASK_ID {} is below $SLURM_ARRAY_TASK_MIN {}", id, first);
      shard.index = id - first;
    } else if (const std::string job = environment("JOB_COMPLETION_INDEX"); !job.empty()) {
      shard.index = parse_count(job, "$JOB_COMPLETION_INDEX");
    } else {
      fail("--shard {}: K is auto but neither $SLURM_ARRAY_TASK_ID nor $JOB_COMPLETION_INDEX is set", text);
    }
  } else {
    shard.index = parse_count(index, "K");
  }
  shard.count = parse_count(count, "N");
  if (shard.count == 0) fail("--shard {}: N must be at least 1", text);
  if (shard.index >= shard.count)
    fail("--shard {}: K = {} must be below N = {} (K counts from 0)", text, shard.index, shard.count);
  return shard;
}

void write_shard_manifest(const fs::path& folder, const ShardManifest& m) {
  fs::create_directories(folder);
  const json document = {{"job", m.job},           {"shard", m.shard.index},
                         {"shards", m.shard.count}, {"inputs_fingerprint", m.inputs_fingerprint},
                         {"options", m.options},    {"rows", m.rows},
                         {"complete", m.complete}};
  write_file_atomic(folder / "shard.json", document.dump(2) + "\n");
}

ShardManifest read_shard_manifest(const fs::path& folder) {
  const fs::path path = folder / "shard.json";
  if (!fs::is_regular_file(path)) fail("{}: no shard.json: not the output folder of a --shard run", folder.string());
  const json document = json::parse(read_file(path), nullptr, false);
  if (!document.is_object() || !document.contains("job") || !document["job"].is_string() ||
      !document.contains("shard") || !document["shard"].is_number_unsigned() || !document.contains("shards") ||
      !document["shards"].is_number_unsigned() || !document.contains("inputs_fingerprint") ||
      !document.contains("complete") || !document["complete"].is_boolean())
    fail("{}: not a shard manifest (job, shard, shards, inputs_fingerprint, complete)", path.string());
  ShardManifest m;
  m.job = document["job"];
  m.shard.index = document["shard"];
  m.shard.count = document["shards"];
  m.inputs_fingerprint = document["inputs_fingerprint"].dump();
  if (document["inputs_fingerprint"].is_string()) m.inputs_fingerprint = document["inputs_fingerprint"];
  m.options = document.value("options", json::object());
  m.rows = document.value("rows", json::object());
  m.complete = document["complete"];
  return m;
}

std::vector<ShardManifest> check_shards(const std::vector<fs::path>& folders) {
  if (folders.empty()) fail("merge: no shard folders given");
  std::vector<ShardManifest> manifests;
  for (const auto& f : folders) manifests.push_back(read_shard_manifest(f));
  const ShardManifest& first = manifests.front();
  std::map<size_t, fs::path> seen;
  for (size_t i = 0; i < manifests.size(); ++i) {
    const ShardManifest& m = manifests[i];
    const std::string where = folders[i].string();
    if (m.job != first.job) fail("merge: {} is a '{}' shard, {} a '{}' shard", where, m.job, folders[0].string(), first.job);
    if (m.shard.count != first.shard.count)
      fail("merge: {} is one of {} shards, {} one of {}", where, m.shard.count, folders[0].string(), first.shard.count);
    if (m.inputs_fingerprint != first.inputs_fingerprint)
      fail("merge: {} ran on other inputs than {} (inputs fingerprint {} vs {})", where, folders[0].string(),
           m.inputs_fingerprint, first.inputs_fingerprint);
    if (m.options != first.options)
      fail("merge: {} ran with other options than {}: {} vs {}", where, folders[0].string(), m.options.dump(),
           first.options.dump());
    if (!m.complete) fail("merge: shard {} ({}) is not complete: rerun it, it resumes", m.shard.label(), where);
    if (auto [it, fresh] = seen.emplace(m.shard.index, folders[i]); !fresh)
      fail("merge: shard {} given twice: {} and {}", m.shard.label(), it->second.string(), where);
  }
  for (size_t k = 0; k < first.shard.count; ++k)
    if (!seen.count(k)) fail("merge: shard {}/{} is missing", k, first.shard.count);
  std::sort(manifests.begin(), manifests.end(),
            [](const ShardManifest& a, const ShardManifest& b) { return a.shard.index < b.shard.index; });
  return manifests;
}

size_t merge_shard_rows(const std::vector<fs::path>& folders, const std::vector<ShardManifest>& manifests,
                        const std::string& file, const fs::path& out) {
  std::map<size_t, fs::path> folder_of;  // check_shards sorted the manifests by index; the folders follow them
  for (const auto& f : folders) folder_of[read_shard_manifest(f).shard.index] = f;
  std::map<std::string, size_t> shard_of_id;
  std::string merged;
  size_t rows = 0;
  for (const ShardManifest& m : manifests) {
    const fs::path path = folder_of.at(m.shard.index) / file;
    const size_t expected = m.rows.contains(file) ? m.rows[file].get<size_t>() : 0;
    size_t distinct = 0;
    for (const json& row : read_jsonl_log_for_resume(path)) {
      if (!row.contains("id") || !row["id"].is_string()) fail("merge: {}: a row without a string 'id'", path.string());
      const std::string id = row["id"];
      auto [it, fresh] = shard_of_id.emplace(id, m.shard.index);
      if (!fresh && it->second != m.shard.index)
        fail("merge: row '{}' is in shard {} and in shard {}", id, it->second, m.shard.index);
      if (!fresh) continue;  // written twice by one shard (a resumed run redoing a row): keep the first
      ++distinct;
      merged += to_jsonl_line(row) + "\n";
    }
    if (distinct != expected)
      fail("merge: {} holds {} rows, its shard.json says {}: the folder was changed after the run", path.string(),
           distinct, expected);
    rows += distinct;
  }
  write_file_atomic(out, merged);
  return rows;
}

Fingerprint& Fingerprint::add(std::string_view field) {
  const std::string length = std::to_string(field.size()) + ":";
  state_ = fnv1a64(field, fnv1a64(length, state_));
  return *this;
}

std::string Fingerprint::hex() const { return fmt::format("{:016x}", state_); }

}  // namespace guardkit
