#include "augment/harmaug.h"

#include <algorithm>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "augment/dedup.h"
#include "guard/guard.h"
#include "util/error.h"
#include "util/jsonl.h"
#include "util/paths.h"

namespace guardkit::augment {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Appends rows to a JSONL file, flushing after each batch so a kill loses at most the batch being written.
class JsonlAppender {
 public:
  explicit JsonlAppender(const fs::path& path) : path_(path) {
    if (path.has_parent_path()) fs::create_directories(path.parent_path());
    out_.open(path, std::ios::app | std::ios::binary);
    if (!out_) fail("{}: cannot open for appending", path.string());
  }
  void append(const json& row) { out_ << to_jsonl_line(row) << '\n'; }
  void flush() {
    out_.flush();
    if (!out_) fail("{}: write failed (disk full?)", path_.string());
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

std::set<std::string> ids_in(const std::vector<json>& rows) {
  std::set<std::string> ids;
  for (const auto& r : rows)
    if (r.contains("id") && r["id"].is_string()) ids.insert(r["id"].get<std::string>());
  return ids;
}

const std::vector<std::string>& refusal_markers() {
  static const std::vector<std::string> markers = {
      "i'm sorry", "i am sorry", "i apologize", "i cannot", "i can't", "i can not", "as an ai", "as a language model",
      "i'm not able", "i am not able", "i won't", "i will not", "cannot fulfill", "cannot assist", "not appropriate"};
  return markers;
}

}  // namespace

std::string render_instruction_request(const InstructionConfig& config, const std::vector<std::string>& exemplars) {
  std::string text;
  if (!exemplars.empty()) {
    text += "Here are examples of harmful instruction prompts:\n";
    for (size_t i = 0; i < exemplars.size(); ++i) text += fmt::format("{}. {}\n", i + 1, trim(exemplars[i]));
    text += "\n";
  }
  text += config.request;
  return text;
}

std::string extract_instruction(std::string_view continuation) {
  std::string text = trim(continuation);
  // A quoted instruction: "..." or “...”.
  for (auto [open, close] : {std::pair<std::string, std::string>{"\"", "\""}, {"\u201c", "\u201d"}}) {
    auto b = text.find(open);
    if (b != std::string::npos && b < 8) {
      auto e = text.find(close, b + open.size());
      if (e != std::string::npos && e > b + open.size()) return trim(text.substr(b + open.size(), e - b - open.size()));
    }
  }
  // The first non-empty line, without list markers or labels.
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = trim(std::string_view(text).substr(pos, end - pos));
    pos = end + 1;
    while (!line.empty() && (line[0] == '-' || line[0] == '*' || line[0] == '>' || line[0] == '#')) line = trim(line.substr(1));
    for (std::string label : {"prompt:", "instruction:", "harmful prompt:", "here it is:"}) {
      if (lower(line).rfind(label, 0) == 0) line = trim(line.substr(label.size()));
    }
    if (line.size() >= 2 && line.front() == '"' && line.back() == '"') line = trim(line.substr(1, line.size() - 2));
    if (!line.empty()) return line;
  }
  return "";
}

std::string refusal_or_length_problem(std::string_view instruction, const InstructionConfig& config) {
  if (trim(instruction).empty()) return "empty";
  if (instruction.size() < config.min_chars) return "too short";
  if (instruction.size() > config.max_chars) return "too long";
  const std::string low = lower(instruction);
  for (const auto& marker : refusal_markers())
    if (low.find(marker) != std::string::npos) return "refusal";
  return "";
}

InstructionStats generate_instructions(const InstructionConfig& config,
                                       const std::vector<std::pair<std::string, std::string>>& seed_prompts,
                                       LlmBackend& generator, const fs::path& out_path, const Progress& progress) {
  if (config.exemplars > 0 && seed_prompts.size() < static_cast<size_t>(config.exemplars))
    fail("instruction generation: {} exemplars asked for but the seed set has {} prompts", config.exemplars,
         seed_prompts.size());
  if (config.batch_size == 0) fail("instruction generation: batch size must be at least 1");
  const size_t max_requests = config.max_requests ? config.max_requests : 20 * config.target_count;
  const fs::path progress_path = out_path.string() + ".progress.json";

  // Resume: rows already kept, and where the last completed batch ended.
  NearDuplicateIndex index(config.near_duplicate_jaccard);
  for (const auto& [id, text] : seed_prompts) index.check_and_add(text, /*add_anyway=*/true);
  auto existing = read_jsonl_log_for_resume(out_path);
  std::set<size_t> kept_requests;
  for (const auto& row : existing) {
    index.check_and_add(row.value("prompt", ""), /*add_anyway=*/true);
    kept_requests.insert(row.value("request_index", size_t{0}));
  }
  InstructionStats stats;
  stats.kept = existing.size();
  size_t next_request = 0;
  if (fs::exists(progress_path)) {
    auto p = json::parse(read_file(progress_path), nullptr, false);
    if (p.is_discarded() || !p.contains("next_request")) fail("{}: damaged progress file", progress_path.string());
    next_request = p["next_request"].get<size_t>();
    // A named copy: in `for (x : p.value(...).items())` the json temporary dies before the loop body (C++20).
    const json rejected = p.value("rejected", json::object());
    for (auto& [reason, count] : rejected.items()) stats.rejected[reason] = count.get<size_t>();
  }
  stats.requests = next_request;

  JsonlAppender out(out_path);
  if (progress) progress(stats.kept, config.target_count);  // the loop starts: rates count from here
  while (stats.kept < config.target_count && next_request < max_requests) {
    const size_t batch_end = std::min(max_requests, next_request + config.batch_size);
    std::vector<ChatRequest> requests;
    std::vector<std::vector<size_t>> exemplar_ids;
    for (size_t r = next_request; r < batch_end; ++r) {
      std::mt19937_64 rng(config.seed * 1000003ULL + r);  // per request: the same exemplars in every run
      std::vector<size_t> picks(seed_prompts.size());
      std::iota(picks.begin(), picks.end(), 0);
      std::shuffle(picks.begin(), picks.end(), rng);
      picks.resize(static_cast<size_t>(std::max(config.exemplars, 0)));
      std::vector<std::string> exemplars;
      for (size_t i : picks) exemplars.push_back(seed_prompts[i].second);
      ChatRequest req;
      req.messages.push_back({"user", render_instruction_request(config, exemplars)});
      if (config.use_prefix) req.assistant_prefix = config.affirmative_prefix;
      req.sampling = config.sampling;
      req.sampling.seed = config.seed + r;
      requests.push_back(std::move(req));
      exemplar_ids.push_back(std::move(picks));
    }
    auto completions = generator.generate(requests);
    if (completions.size() != requests.size())
      fail("generator {} returned {} completions for {} requests", generator.name(), completions.size(), requests.size());
    for (size_t k = 0; k < requests.size() && stats.kept < config.target_count; ++k) {
      const size_t r = next_request + k;
      if (completions[k].error) {
        fail("generator {} failed on request {}: {} (rerun to resume)", generator.name(), r, *completions[k].error);
      }
      const std::string instruction = extract_instruction(completions[k].text);
      if (kept_requests.count(r)) {  // kept before a kill: already in the file and in the index
        continue;
      }
      std::string problem = refusal_or_length_problem(instruction, config);
      if (problem.empty()) {
        const auto verdict = index.check_and_add(instruction);
        if (verdict == NearDuplicateIndex::Verdict::ExactDuplicate) problem = "exact duplicate";
        if (verdict == NearDuplicateIndex::Verdict::NearDuplicate) problem = "near duplicate";
      }
      if (!problem.empty()) {
        ++stats.rejected[problem];
        continue;
      }
      json ids = json::array();
      for (size_t i : exemplar_ids[k]) ids.push_back(seed_prompts[i].first);
      out.append({{"id", fmt::format("ins-{:07d}", r)},
                  {"prompt", instruction},
                  {"request_index", r},
                  {"exemplar_ids", ids},
                  {"generator", generator.name()},
                  {"prompt_version", config.prompt_version},
                  {"prefix", config.use_prefix ? config.affirmative_prefix : ""}});
      kept_requests.insert(r);
      ++stats.kept;
    }
    out.flush();
    next_request = batch_end;
    stats.requests = next_request;
    json rejected = json::object();
    for (const auto& [reason, count] : stats.rejected) rejected[reason] = count;
    write_file_atomic(progress_path, json{{"next_request", next_request}, {"kept", stats.kept}, {"rejected", rejected}}.dump());
    if (progress) progress(stats.kept, config.target_count);
  }
  if (stats.kept < config.target_count)
    spdlog::warn("kept {} of {} instructions after {} requests (raise --max-requests)", stats.kept,
                 config.target_count, stats.requests);
  return stats;
}

size_t generate_responses(const ResponseConfig& config, const fs::path& instructions_path, LlmBackend& responder,
                          const fs::path& out_path, const Progress& progress) {
  auto instructions = read_jsonl_log_for_resume(instructions_path);
  auto done = ids_in(read_jsonl_log_for_resume(out_path));
  struct Job {
    std::string id, instruction_id, prompt, kind;
    size_t index;
  };
  std::vector<Job> jobs;
  for (size_t i = 0; i < instructions.size(); ++i) {
    const auto& row = instructions[i];
    const std::string id = row.value("id", fmt::format("row-{}", i));
    for (std::string kind : {"comply", "refuse"}) {
      Job job{id + "-" + kind, id, row.value("prompt", ""), kind, i};
      if (!done.count(job.id)) jobs.push_back(std::move(job));
    }
  }
  JsonlAppender out(out_path);
  const size_t total = done.size() + jobs.size();
  if (progress) progress(done.size(), total);  // the loop starts: rates count from here
  for (size_t start = 0; start < jobs.size(); start += config.batch_size) {
    const size_t end = std::min(jobs.size(), start + config.batch_size);
    std::vector<ChatRequest> requests;
    for (size_t j = start; j < end; ++j) {
      ChatRequest req;
      const bool comply = jobs[j].kind == "comply";
      req.messages.push_back({"system", comply ? config.comply_system : config.refuse_system});
      req.messages.push_back({"user", jobs[j].prompt});
      if (comply) req.assistant_prefix = config.comply_prefix;
      req.sampling = config.sampling;
      req.sampling.seed = config.seed + jobs[j].index * 2 + (comply ? 0 : 1);
      requests.push_back(std::move(req));
    }
    auto completions = responder.generate(requests);
    if (completions.size() != requests.size()) fail("responder returned the wrong number of completions");
    for (size_t k = 0; k < requests.size(); ++k) {
      const auto& job = jobs[start + k];
      if (completions[k].error) {
        spdlog::warn("{}: {} (skipped; a rerun retries it)", job.id, *completions[k].error);
        continue;
      }
      std::string response = trim(completions[k].text);
      if (!requests[k].assistant_prefix.empty()) response = requests[k].assistant_prefix + " " + response;
      out.append({{"id", job.id},
                  {"instruction_id", job.instruction_id},
                  {"prompt", job.prompt},
                  {"response", response},
                  {"kind", job.kind},
                  {"responder", responder.name()}});
      done.insert(job.id);
    }
    out.flush();
    if (progress) progress(done.size(), total);
  }
  return done.size();
}

size_t label_with_teacher(guard::Guard& teacher, const fs::path& instructions_path,
                          const std::optional<fs::path>& responses_path, const fs::path& out_path, size_t batch_size,
                          const Progress& progress) {
  struct Row {
    std::string id, prompt;
    std::optional<std::string> response;
    json provenance;
  };
  std::vector<Row> rows;
  auto done = ids_in(read_jsonl_log_for_resume(out_path));
  for (const auto& r : read_jsonl_log_for_resume(instructions_path)) {
    Row row{r.value("id", "") + "-prompt", r.value("prompt", ""), std::nullopt,
            {{"generator", r.value("generator", "")}, {"prompt_version", r.value("prompt_version", "")}}};
    if (!done.count(row.id)) rows.push_back(std::move(row));
  }
  if (responses_path) {
    for (const auto& r : read_jsonl_log_for_resume(*responses_path)) {
      Row row{r.value("id", ""), r.value("prompt", ""), r.value("response", ""),
              {{"responder", r.value("responder", "")}, {"kind", r.value("kind", "")}}};
      if (!done.count(row.id)) rows.push_back(std::move(row));
    }
  }
  JsonlAppender out(out_path);
  const size_t total = done.size() + rows.size();
  if (batch_size == 0) batch_size = 1;
  if (progress) progress(done.size(), total);  // the loop starts: rates count from here
  for (size_t start = 0; start < rows.size(); start += batch_size) {
    const size_t end = std::min(rows.size(), start + batch_size);
    std::vector<guard::Conversation> batch;
    for (size_t i = start; i < end; ++i) batch.push_back(guard::Conversation::from_pair(rows[i].prompt, rows[i].response));
    auto scores = teacher.score(batch);
    for (size_t i = start; i < end; ++i) {
      json row = {{"id", rows[i].id},
                  {"prompt", rows[i].prompt},
                  {"response", rows[i].response ? json(*rows[i].response) : json(nullptr)},
                  {"unsafe-score", scores[i - start].p_unsafe},
                  {"teacher", teacher.name()}};
      row.update(rows[i].provenance);
      out.append(row);
      done.insert(rows[i].id);
    }
    out.flush();
    if (progress) progress(done.size(), total);
  }
  return done.size();
}

}  // namespace guardkit::augment
