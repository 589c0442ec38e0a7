#include "route/paraphrase.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "eval/example.h"
#include "util/jsonl.h"
#include "util/error.h"
#include "util/progress.h"

namespace guardkit::route {

namespace fs = std::filesystem;

std::string paraphrase_instruction(const std::string& prompt, const std::optional<std::string>& response,
                                   ParaphraseStyle style) {
  const std::string shown_response = response ? *response : "None";
  if (style == ParaphraseStyle::Code) {
    return "Parapharse the following prompt and response respectively while preserving their original semantics. "
           "Adhere strictly to the following format. First do not include original prompt and response.  Second, "
           "start the paraphrased prompt with \"prompt:\". Third, start the paraphrased response with \"response:\". "
           "Fourth, if response is given as None, just provide it as None.\n"
           "prompt: " + prompt + "\n\nresponse: " + shown_response + "\n\n";
  }
  return "Paraphrase the following prompt and response respectively while preserving their original semantics. "
         "Adhere strictly to the following format. First do not include original prompt and response. Second, start "
         "the paraphrased prompt with \xE2\x80\x9Cprompt:\xE2\x80\x9D. Third, start the paraphrased response with "
         "\xE2\x80\x9Cresponse:\xE2\x80\x9D. Fourth, if response is given as None, just provide it as None. prompt: " +
         prompt + " response: " + shown_response;
}

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
std::string strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return std::string(s.substr(b, e - b));
}
uint64_t request_seed(uint64_t seed, int round, size_t item) {
  uint64_t z = seed ^ (0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(round) + 1)) ^ (item * 0xBF58476D1CE4E5B9ULL);
  z = (z ^ (z >> 31)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 29);
}
}  // namespace

std::optional<ParsedParaphrase> parse_paraphrase(const std::string& text) {
  // The leftmost "prompt:" that some "response:" follows is the first "prompt:" (if it has none after it, no later
  // one has); the lazy group ends at the first "response:" after it.
  const size_t p = text.find("prompt:");
  if (p == std::string::npos) return std::nullopt;
  const size_t r = text.find("response:", p + 7);
  if (r == std::string::npos) return std::nullopt;
  ParsedParaphrase parsed;
  parsed.prompt = strip(std::string_view(text).substr(p + 7, r - (p + 7)));
  std::string response = strip(std::string_view(text).substr(r + 9));
  if (response != "None") parsed.response = std::move(response);
  return parsed;
}

namespace {
augment::ChatRequest paraphrase_request(const LabeledExample& source, int round, size_t item,
                                        const ParaphraseOptions& options) {
  const auto& conversation = source.conversation;
  augment::ChatRequest request;
  request.messages.push_back(
      {"user", paraphrase_instruction(conversation.last_prompt(), conversation.last_response(), options.style)});
  request.sampling.temperature = options.temperature;
  request.sampling.max_tokens = options.max_tokens;
  request.sampling.seed = request_seed(options.seed, round, item);
  return request;
}
}  // namespace

std::vector<LabeledExample> paraphrase_round(augment::LlmBackend& backend, const std::vector<LabeledExample>& sources,
                                             int round, const ParaphraseOptions& options, ParaphraseStats* stats) {
  if (options.batch_size == 0) fail("paraphrase: batch size must be positive");
  std::vector<LabeledExample> out;
  ProgressBar bar(fmt::format("paraphrase round {}", round), sources.size(), options.progress);
  for (size_t begin = 0; begin < sources.size(); begin += options.batch_size) {
    const size_t end = std::min(sources.size(), begin + options.batch_size);
    std::vector<augment::ChatRequest> requests;
    for (size_t i = begin; i < end; ++i) {
      augment::ChatRequest request = paraphrase_request(sources[i], round, i, options);
      requests.push_back(std::move(request));
    }
    const auto completions = backend.generate(requests);
    if (completions.size() != requests.size())
      fail("paraphrase: backend '{}' returned {} completions for {} requests", backend.name(), completions.size(),
           requests.size());
    for (size_t k = 0; k < completions.size(); ++k) {
      const LabeledExample& source = sources[begin + k];
      if (stats) ++stats->requested;
      if (completions[k].error) {
        if (stats) ++stats->failed_requests;
        continue;
      }
      auto parsed = parse_paraphrase(completions[k].text);
      if (!parsed) {
        if (stats) ++stats->dropped_unparsable;
        continue;
      }
      if (stats) ++stats->parsed;
      LabeledExample example;
      example.id = fmt::format("{}#para{}", source.id, round);
      example.conversation = guard::Conversation::from_pair(std::move(parsed->prompt), std::move(parsed->response));
      example.label = source.label;
      out.push_back(std::move(example));
    }
    bar.update(end);
  }
  bar.finish();
  return out;
}

std::vector<LabeledExample> paraphrase_examples(augment::LlmBackend& backend,
                                                const std::vector<LabeledExample>& sources,
                                                const ParaphraseOptions& options, const fs::path& out_dir,
                                                ParaphraseStats* stats) {
  if (options.rounds < 0) fail("paraphrase: rounds must be >= 0, got {}", options.rounds);
  std::vector<LabeledExample> all;
  if (!out_dir.empty()) fs::create_directories(out_dir);
  for (int round = 0; round < options.rounds; ++round) {
    const fs::path file = out_dir.empty() ? fs::path() : out_dir / fmt::format("round{}.jsonl", round);
    std::vector<LabeledExample> generated;
    if (!file.empty() && fs::exists(file)) {
      for (auto& e : eval::read_examples_jsonl_file(file)) {
        LabeledExample example;
        example.id = std::move(e.id);
        example.conversation = guard::Conversation::from_pair(std::move(e.prompt), std::move(e.response));
        example.label = e.label;
        generated.push_back(std::move(example));
      }
    } else {
      generated = paraphrase_round(backend, sources, round, options, stats);
      if (!file.empty()) {
        std::vector<eval::Example> rows;
        for (const auto& g : generated) {
          eval::Example e;
          e.id = g.id;
          e.prompt = g.conversation.last_prompt();
          e.response = g.conversation.last_response();
          e.label = g.label;
          e.source = fmt::format("paraphrase:{}:round{}", backend.name(), round);
          rows.push_back(std::move(e));
        }
        eval::write_examples_jsonl_file(file, rows);
      }
    }
    all.insert(all.end(), generated.begin(), generated.end());
  }
  return all;
}

ParaphraseLogResult paraphrase_to_log(augment::LlmBackend& backend, const std::vector<LabeledExample>& sources,
                                      const ParaphraseOptions& options, const fs::path& log) {
  using nlohmann::json;
  if (options.rounds < 0) fail("paraphrase: rounds must be >= 0, got {}", options.rounds);
  if (options.batch_size == 0) fail("paraphrase: batch size must be positive");
  std::unordered_map<std::string, size_t> source_index;
  for (size_t i = 0; i < sources.size(); ++i)
    if (!source_index.emplace(sources[i].id, i).second)
      fail("paraphrase: source id '{}' appears twice (ids name the paraphrases and make resuming possible)",
           sources[i].id);

  ParaphraseLogResult result;
  std::set<std::string> done;
  auto take_line = [&](const json& row, const std::string& where) {
    const std::string id = row.value("id", "");
    const std::string status = row.value("status", "");
    if (id.empty() || (status != "parsed" && status != "unparsable"))
      fail("{}: not a paraphrase log line (needs id and status parsed|unparsable)", where);
    if (!done.insert(id).second) fail("{}: id '{}' logged twice", where, id);
    ++result.logged;
    if (status == "unparsable") {
      ++result.unparsable;
      return;
    }
    LabeledExample example;
    example.id = id;
    std::optional<std::string> response;
    if (row.contains("response") && row["response"].is_string()) response = row["response"].get<std::string>();
    example.conversation = guard::Conversation::from_pair(row.value("prompt", ""), std::move(response));
    example.label = row.value("label", 0);
    result.parsed.push_back(std::move(example));
  };
  size_t line = 0;
  for (const json& row : read_jsonl_log_for_resume(log)) take_line(row, fmt::format("{}:{}", log.string(), ++line));

  // (round, item) pairs still to ask, rounds in order.
  std::vector<std::pair<int, size_t>> todo;
  for (int round = 0; round < options.rounds; ++round)
    for (size_t i = 0; i < sources.size(); ++i) {
      if (done.count(fmt::format("{}#para{}", sources[i].id, round))) ++result.skipped;
      else todo.emplace_back(round, i);
    }
  if (!log.parent_path().empty()) fs::create_directories(log.parent_path());
  std::ofstream out(log, std::ios::app | std::ios::binary);
  if (!out) fail("{}: cannot open for appending", log.string());
  ProgressBar bar("paraphrase", result.skipped + todo.size(), options.progress);
  bar.resume_from(result.skipped);
  for (size_t begin = 0; begin < todo.size(); begin += options.batch_size) {
    const size_t end = std::min(todo.size(), begin + options.batch_size);
    std::vector<augment::ChatRequest> requests;
    for (size_t k = begin; k < end; ++k)
      requests.push_back(paraphrase_request(sources[todo[k].second], todo[k].first, todo[k].second, options));
    const auto completions = backend.generate(requests);
    if (completions.size() != requests.size())
      fail("paraphrase: backend '{}' returned {} completions for {} requests", backend.name(), completions.size(),
           requests.size());
    std::string lines;
    for (size_t k = 0; k < completions.size(); ++k) {
      const auto [round, item] = todo[begin + k];
      const LabeledExample& source = sources[item];
      ++result.this_run.requested;
      if (completions[k].error) {
        ++result.this_run.failed_requests;
        continue;
      }
      json row = {{"id", fmt::format("{}#para{}", source.id, round)},
                  {"source_id", source.id},
                  {"round", round},
                  {"label", source.label}};
      if (auto parsed = parse_paraphrase(completions[k].text)) {
        ++result.this_run.parsed;
        row["status"] = "parsed";
        row["prompt"] = parsed->prompt;
        row["response"] = parsed->response ? json(*parsed->response) : json(nullptr);
      } else {
        ++result.this_run.dropped_unparsable;
        row["status"] = "unparsable";
        row["text"] = completions[k].text;
      }
      const std::string text = to_jsonl_line(row);
      take_line(json::parse(text), log.string());  // what the log will hold, read back the way a rerun reads it
      lines += text + "\n";
    }
    out << lines;
    out.flush();
    if (!out) fail("{}: write failed", log.string());
    bar.update(result.skipped + end, fmt::format("parsed {} dropped {}", result.this_run.parsed,
                                                 result.this_run.dropped_unparsable));
  }
  bar.finish();
  return result;
}

}  // namespace guardkit::route
