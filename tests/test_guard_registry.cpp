// The models configuration file: parsing, validation errors, resolving names and model directories.
#include <gtest/gtest.h>

#include <fstream>

#include "guard/registry.h"
#include "test_util.h"
#include "util/error.h"

namespace guardkit::guard {
namespace {

std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const guardkit::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelRegistry, ParsesEveryKindAndResolvesRelativePaths) {
  auto dir = test::temp_dir("models_file");
  std::ofstream(dir / "models.json") << R"({"models": [
      {"name": "small", "kind": "classifier", "path": "deberta", "dtype": "bf16", "threshold": 0.4,
       "max_length": 1024, "device": "cpu"},
      {"name": "lg1b", "kind": "llama_guard", "path": "/abs/llama", "device": "cuda:1"},
      {"name": "lg8b", "kind": "remote", "url": "http://127.0.0.1:8000", "config": "lg8b/config.json", "options": {"model": "meta-llama/Llama-Guard-3-8B"}}
  ]})";
  ModelRegistry registry = ModelRegistry::from_file(dir / "models.json");
  ASSERT_EQ(registry.specs().size(), 3u);
  ModelSpec small = registry.resolve("small");
  EXPECT_EQ(small.kind, GuardKind::kClassifier);
  EXPECT_EQ(small.path, dir / "deberta");
  EXPECT_EQ(small.dtype, "bf16");
  EXPECT_DOUBLE_EQ(small.threshold, 0.4);
  EXPECT_EQ(small.max_length, 1024);
  EXPECT_EQ(registry.resolve("lg1b").path, "/abs/llama");
  EXPECT_EQ(registry.resolve("lg1b").device, "cuda:1");
  EXPECT_DOUBLE_EQ(registry.resolve("lg1b").threshold, 0.5);
  ModelSpec remote = registry.resolve("lg8b");
  EXPECT_EQ(remote.kind, GuardKind::kRemote);
  EXPECT_EQ(remote.url, "http://127.0.0.1:8000");
  EXPECT_EQ(remote.options["model"], "meta-llama/Llama-Guard-3-8B");
  EXPECT_EQ(remote.config, dir / "lg8b" / "config.json");
  EXPECT_EQ(small.config, dir / "deberta" / "config.json");
}

TEST(ModelRegistry, ValidationErrors) {
  auto parse = [](const std::string& text) {
    return error_of([&] { ModelRegistry::from_json(nlohmann::json::parse(text), "/base", "m.json"); });
  };
  EXPECT_EQ(parse(R"({"guards": []})"), "m.json: expected {\"models\": [...]} or a list of models");
  EXPECT_EQ(parse(R"([{"kind": "classifier", "path": "x"}])"), "m.json: model 1: missing 'name'");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "bert", "path": "x"}])"),
            "m.json: model 1 ('a'): unknown kind 'bert' (classifier, llama_guard or remote)");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier"}])"), "m.json: model 1: missing 'path'");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "remote", "url": "localhost:8000"}])"),
            "m.json: model 1 ('a'): 'url' must start with http:// or https://, got 'localhost:8000'");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier", "path": "x", "dtype": "int4"}])"),
            "m.json: model 1 ('a'): unknown dtype 'int4' (float32, bfloat16 or float16)");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier", "path": "x", "device": "tpu"}])"),
            "m.json: model 1 ('a'): unknown device 'tpu' (cpu, cuda or cuda:N)");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier", "path": "x", "threshold": 1.5}])"),
            "m.json: model 1 ('a'): 'threshold' must be a number in [0, 1]");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier", "path": "x", "batch": 3}])"),
            "m.json: model 1: unknown field 'batch' (kind-specific settings go in 'options')");
  EXPECT_EQ(parse(R"([{"name": "a", "kind": "classifier", "path": "x"}, {"name": "a", "kind": "classifier", "path": "y"}])"),
            "m.json: model name 'a' appears twice");
  EXPECT_NE(error_of([] { ModelRegistry::from_file("/nonexistent/models.json"); }).find("/nonexistent/models.json"),
            std::string::npos);
}

TEST(ModelRegistry, ModelDirectoriesResolveByModelType) {
  ModelRegistry empty;
  ModelSpec deberta = empty.resolve(test::fixture("deberta").string());
  EXPECT_EQ(deberta.kind, GuardKind::kClassifier);
  EXPECT_EQ(deberta.name, "deberta");
  EXPECT_EQ(empty.resolve(test::fixture("llama").string()).kind, GuardKind::kLlamaGuard);
  EXPECT_NE(error_of([&] { empty.resolve("no-such-model"); }).find("unknown model 'no-such-model'"), std::string::npos);
}

}  // namespace
}  // namespace guardkit::guard
