// `guardkit serve` as a process: the real binary started on 127.0.0.1 (port 0, the bound port read from its stderr),
// configured by a models file whose top-level "generator" names a Llama entry, queried over HTTP, then stopped with
// SIGTERM (graceful: exit code 0). Also: a generator that is not a Llama is refused at start-up with a clear message.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "child_process.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

using guardkit::test::ServeProcess;

std::filesystem::path write_models_file(const std::string& generator) {
  auto dir = guardkit::test::temp_dir("cli_serve");
  json models = {{"models",
                  {{{"name", "guard"}, {"kind", "classifier"}, {"path", guardkit::test::fixture("deberta").string()}},
                   {{"name", "tiny-llama"}, {"kind", "llama_guard"}, {"path", guardkit::test::fixture("llama").string()}}}},
                 {"generator", generator}};
  std::ofstream(dir / "models.json") << models.dump(2);
  return dir / "models.json";
}

TEST(CliServe, ServesTheModelsFileGeneratorAndStopsGracefullyOnSigterm) {
  const auto models = write_models_file("tiny-llama");
  ServeProcess serve({"--config", models.string(), "--port", "0", "--access-log", "off", "--max-logprobs", "5",
                      "--max-completion-tokens", "6"});
  const int port = serve.wait_for_port(std::chrono::seconds(90));
  ASSERT_GT(port, 0) << serve.output();

  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  auto listed = client.Get("/v1/models");
  ASSERT_TRUE(listed);
  bool generator_listed = false;
  const json listed_body = json::parse(listed->body);
  for (const auto& m : listed_body["data"])
    generator_listed |= m["id"] == "tiny-llama" && m["role"] == "generator";
  EXPECT_TRUE(generator_listed) << listed->body;

  json request = {{"model", "tiny-llama"},
                  {"messages", json::array({{{"role", "user"}, {"content", "Hello there"}}})},
                  {"max_tokens", 4},
                  {"temperature", 0},
                  {"logprobs", true},
                  {"top_logprobs", 5}};
  auto chat = client.Post("/v1/chat/completions", request.dump(), "application/json");
  ASSERT_TRUE(chat);
  ASSERT_EQ(chat->status, 200) << chat->body;
  const json body = json::parse(chat->body);
  EXPECT_EQ(body["model"], "tiny-llama");
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 5u);
  // The command-line caps reach the server.
  request["top_logprobs"] = 6;
  auto over = client.Post("/v1/chat/completions", request.dump(), "application/json");
  ASSERT_TRUE(over);
  EXPECT_EQ(over->status, 400) << over->body;
  request["top_logprobs"] = 5;
  request["max_tokens"] = 7;
  over = client.Post("/v1/chat/completions", request.dump(), "application/json");
  ASSERT_TRUE(over);
  EXPECT_EQ(over->status, 400) << over->body;

  EXPECT_EQ(serve.terminate(std::chrono::seconds(30)), 0) << serve.output();
  EXPECT_NE(serve.output().find("draining"), std::string::npos) << serve.output();
  // A local Llama (guard and generator) keeps every libtorch thread: one batch worker per guard on this machine's cores.
  EXPECT_NE(serve.output().find("scoring: 1 batch worker(s) per guard"), std::string::npos) << serve.output();
}

TEST(CliServe, ClassifierGuardsGetAWorkerPerCoreWithOneThreadEachUnlessTold) {
  auto dir = guardkit::test::temp_dir("cli_serve_workers");
  json models = {{"models", {{{"name", "guard"}, {"kind", "classifier"}, {"path", guardkit::test::fixture("deberta").string()}}}}};
  std::ofstream(dir / "models.json") << models.dump(2);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (const bool told : {false, true}) {
    std::vector<std::string> args = {"--config", (dir / "models.json").string(), "--port", "0", "--access-log", "off"};
    if (told) args.insert(args.end(), {"--workers", "3"});
    ServeProcess serve(args);
    const int port = serve.wait_for_port(std::chrono::seconds(90));
    ASSERT_GT(port, 0) << serve.output();
    const std::string expected = told ? "scoring: 3 batch worker(s) per guard x "
                                      : fmt::format("scoring: {} batch worker(s) per guard x 1 libtorch thread(s)",
                                                    std::min(cores, 8));
    EXPECT_NE(serve.output().find(expected), std::string::npos) << serve.output();
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(30, 0);
    json inputs = json::array();
    for (int i = 0; i < 12; ++i) inputs.push_back("request number " + std::to_string(i));
    auto res = client.Post("/v1/moderations", json{{"input", inputs}}.dump(), "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(json::parse(res->body)["results"].size(), 12u);
    EXPECT_EQ(serve.terminate(std::chrono::seconds(30)), 0) << serve.output();
  }
}

TEST(CliServe, RefusesAGeneratorThatIsNotALlama) {
  const auto models = write_models_file("guard");
  ServeProcess serve({"--config", models.string(), "--port", "0", "--access-log", "off"});
  EXPECT_EQ(serve.wait_for_port(std::chrono::seconds(90)), 0) << serve.output();
  EXPECT_NE(serve.exit_code(), 0);
  EXPECT_NE(serve.output().find("a generator must be a Llama checkpoint"), std::string::npos) << serve.output();
}

}  // namespace
