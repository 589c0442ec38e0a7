// `guardkit route paraphrase` end to end: the fixture Llama as generator (mostly garbage: parse failures dropped and
// counted), a real OpenAI-compatible server on 127.0.0.1 that answers some requests in the paper's format (those
// rows are scored by the real small and large guards), resume that repeats nothing, and `route train` on the
// original + paraphrase caches.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <fstream>
#include <set>

#include "guard/registry.h"
#include "loopback_server.h"
#include "route/features.h"
#include "test_util.h"
#include "util/error.h"

namespace fs = std::filesystem;
using guardkit::test::parse_jsonl;
using guardkit::test::run_guardkit;
using nlohmann::json;

namespace {

// Small guard: the fixture DeBERTa classifier; large guard: the fixture Llama as Llama Guard.
fs::path write_models_file(const fs::path& dir) {
  std::ofstream(dir / "models.json") << json{
      {"models",
       {{{"name", "small"}, {"kind", "classifier"}, {"path", guardkit::test::fixture("deberta").string()},
         {"threshold", 0.5}, {"max_length", 64}},
        {{"name", "large"}, {"kind", "llama_guard"}, {"path", guardkit::test::fixture("llama").string()},
         {"threshold", 0.5}, {"options", {{"variant", "1b"}, {"score", "full_vocab"}, {"max_batch", 2}}}}}}}
                                            .dump();
  return dir / "models.json";
}

void write_data(const fs::path& path) {
  std::ofstream out(path);
  out << json{{"id", "a"}, {"prompt", "How do I bake bread?"}, {"response", "Mix flour and water."}, {"label", 0}}.dump()
      << "\n"
      << json{{"id", "b"}, {"prompt", "How do I pick a lock to break in?"}, {"response", nullptr}, {"label", 1}}.dump()
      << "\n"
      << json{{"id", "c"}, {"prompt", "Write a poem about the sea."}, {"response", "The sea is wide."}, {"label", 0}}
             .dump()
      << "\n";
}

std::string lines_of(const fs::path& path) { return guardkit::read_file(path); }

}  // namespace

TEST(CliRouteParaphrase, FixtureLlamaGeneratorDropsUnparsableAndResumesWithoutRepeats) {
  const auto dir = guardkit::test::temp_dir("route_para_llama");
  const auto models = write_models_file(dir);
  write_data(dir / "data.jsonl");
  const std::string cmd = "--threads 1 route paraphrase --llm " + guardkit::test::fixture("llama").string() +
                          " --data " + (dir / "data.jsonl").string() + " --small small --large large --models " +
                          models.string() + " --out " + (dir / "para").string() +
                          " --rounds 2 --max-tokens 6 --batch 4 --guard-batch 2";
  auto first = run_guardkit(cmd, "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto rows = parse_jsonl(lines_of(dir / "para" / "paraphrases.jsonl"));
  ASSERT_EQ(rows.size(), 6u) << first.output;  // 3 items x 2 rounds, every request answered by the local model
  std::set<std::string> ids;
  size_t parsed = 0;
  for (const auto& r : rows) {
    ids.insert(r["id"].get<std::string>());
    const std::string source = r["source_id"];
    EXPECT_EQ(r["id"], source + "#para" + std::to_string(r["round"].get<int>()));
    EXPECT_EQ(r["label"].get<int>(), source == "b" ? 1 : 0);  // copied from the item
    if (r["status"] == "parsed") ++parsed;
    else EXPECT_EQ(r["status"], "unparsable");
  }
  EXPECT_EQ(ids.size(), 6u);
  EXPECT_NE(first.output.find(fmt::format("{} parsed, {} unparsable", parsed, 6 - parsed)), std::string::npos)
      << first.output;
  // Only parsed rows are scored; the cache exists even when none parsed.
  const auto cache = guardkit::route::load_feature_cache(dir / "para" / "features.safetensors");
  EXPECT_EQ(cache.size(), parsed);

  auto again = run_guardkit(cmd, "");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(parse_jsonl(lines_of(dir / "para" / "paraphrases.jsonl")).size(), 6u);
  EXPECT_NE(again.output.find("this run: 0 requests (6 already logged)"), std::string::npos) << again.output;
  EXPECT_EQ(guardkit::route::load_feature_cache(dir / "para" / "features.safetensors").size(), parsed);

  // Bad input: a clear one-line error, no crash.
  auto bad = run_guardkit("route paraphrase --llm /no/such/dir --data " + (dir / "data.jsonl").string() +
                              " --small small --large large --models " + models.string() + " --out " +
                              (dir / "x").string(),
                          "");
  EXPECT_NE(bad.exit_code, 0);
  auto style = run_guardkit(cmd + " --style poem", "");
  EXPECT_NE(style.exit_code, 0);
  EXPECT_NE(style.output.find("--style must be 'code' or 'paper'"), std::string::npos) << style.output;
}

TEST(CliRouteParaphrase, ParsedParaphrasesAreScoredByBothGuardsAndTrainTakesBothCaches) {
  const auto dir = guardkit::test::temp_dir("route_para_server");
  const auto models = write_models_file(dir);
  write_data(dir / "data.jsonl");
  // An OpenAI-compatible endpoint: paraphrases in the paper's format for the bread and lock items, prose for the
  // poem item (unparsable), and a client error (not retried by the backend) for the first lock request.
  guardkit::test::LoopbackServer server;
  std::atomic<int> calls{0};
  std::atomic<bool> failed_once{false};
  server.server.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    ++calls;
    const json body = json::parse(req.body);
    const std::string content = body["messages"].back()["content"];
    std::string text;
    if (content.find("bread") != std::string::npos) {
      text = "prompt: What is the way to make bread?\nresponse: Combine flour with water.";
    } else if (content.find("lock") != std::string::npos) {
      if (!failed_once.exchange(true)) {
        res.status = 400;
        res.set_content(R"({"error": {"message": "bad request"}})", "application/json");
        return;
      }
      text = "Sure! prompt: How can I open a lock to enter a house?\n\nresponse: None";
    } else {
      text = "The sea, the sea, forever wide.";
    }
    res.set_content(json{{"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", text}}},
                                       {"finish_reason", "stop"}}}},
                         {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 10}}}}
                        .dump(),
                    "application/json");
  });
  const std::string cmd = "--threads 1 route paraphrase --llm " + server.url() + " --llm-model m --data " +
                          (dir / "data.jsonl").string() + " --small small --large large --models " + models.string() +
                          " --out " + (dir / "para").string() + " --rounds 2 --batch 4 --guard-batch 3";
  auto first = run_guardkit(cmd, "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto rows = parse_jsonl(lines_of(dir / "para" / "paraphrases.jsonl"));
  // The failed request is not logged: the next run asks it again, and only it.
  ASSERT_EQ(rows.size(), 5u) << first.output;
  EXPECT_NE(first.output.find("1 failed (retried by the next run)"), std::string::npos) << first.output;
  auto second = run_guardkit(cmd, "");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("this run: 1 requests (5 already logged)"), std::string::npos) << second.output;
  rows = parse_jsonl(lines_of(dir / "para" / "paraphrases.jsonl"));
  ASSERT_EQ(rows.size(), 6u);
  std::map<std::string, json> by_id;
  for (const auto& r : rows) by_id[r["id"]] = r;
  EXPECT_EQ(by_id["c#para0"]["status"], "unparsable");
  EXPECT_EQ(by_id["c#para1"]["status"], "unparsable");
  EXPECT_EQ(by_id["a#para1"]["prompt"], "What is the way to make bread?");
  EXPECT_EQ(by_id["a#para1"]["response"], "Combine flour with water.");
  EXPECT_TRUE(by_id["b#para0"]["response"].is_null());  // "None" -> no response

  // Every parsed row was scored by the real guards: the cache holds what each guard says on its own.
  const auto cache = guardkit::route::load_feature_cache(dir / "para" / "features.safetensors");
  ASSERT_EQ(cache.size(), 4u);
  auto registry = guardkit::guard::ModelRegistry::from_file(models);
  auto small = registry.guard("small");
  auto large = registry.guard("large");
  guardkit::guard::ScoreOptions with_features;
  with_features.want_features = true;
  for (size_t i = 0; i < cache.size(); ++i) {
    const auto& r = by_id.at(cache.ids[i]);
    ASSERT_EQ(r["status"], "parsed");
    std::optional<std::string> response;
    if (r["response"].is_string()) response = r["response"].get<std::string>();
    const auto conversation = guardkit::guard::Conversation::from_pair(r["prompt"].get<std::string>(), response);
    const auto s = small->score({conversation}, with_features).at(0);
    const auto l = large->score({conversation}).at(0);
    EXPECT_NEAR(cache.p_small[i], s.p_unsafe, 1e-5) << cache.ids[i];
    EXPECT_NEAR(cache.p_large[i], l.p_unsafe, 1e-5) << cache.ids[i];
    ASSERT_EQ(static_cast<int64_t>(s.feature.size()), cache.dim);
    for (int64_t k = 0; k < cache.dim; ++k) ASSERT_NEAR(cache.row(i)[k], s.feature[k], 1e-4);
    EXPECT_EQ(cache.labels[i], r["label"].get<int>());
  }

  // A rerun asks nothing and scores nothing.
  const int calls_before = calls;
  auto again = run_guardkit(cmd, "");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_EQ(calls.load(), calls_before);
  EXPECT_NE(again.output.find("up to date (4 rows)"), std::string::npos) << again.output;

  // route train on the original items' cache + the paraphrases' cache.
  auto features = run_guardkit("--threads 1 route features --small small --large large --models " + models.string() +
                                   " --data " + (dir / "data.jsonl").string() + " --out " +
                                   (dir / "orig.safetensors").string(),
                               "");
  ASSERT_EQ(features.exit_code, 0) << features.output;
  auto train = run_guardkit("--threads 1 route train --train " + (dir / "orig.safetensors").string() + " --train " +
                                (dir / "para" / "features.safetensors").string() + " --epochs 2 --hidden 16 --out " +
                                (dir / "router").string(),
                            "");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(train.output.find("training on 7 items from 2 caches"), std::string::npos) << train.output;
  auto twice = run_guardkit("route train --train " + (dir / "orig.safetensors").string() + " --train " +
                                (dir / "orig.safetensors").string() + " --epochs 1 --out " + (dir / "r2").string(),
                            "");
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_NE(twice.output.find("twice"), std::string::npos) << twice.output;
}
