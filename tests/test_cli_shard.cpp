// `guardkit eval --shard K/N` + `guardkit merge` as a job array would run them: three shards as separate processes,
// one killed mid-run (SIGKILL) and rerun (it resumes), the merge refuses while a shard is incomplete, and the eval
// over the merged predictions scores nothing and reports exactly what the single-process run reports, from the
// same rows.
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include <fmt/format.h>

#include "child_process.h"
#include "test_util.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using guardkit::test::ChildProcess;
using guardkit::test::run_guardkit;

size_t lines_in(const fs::path& file) {
  std::ifstream in(file);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

std::vector<json> sorted_by_id(const fs::path& file) {
  auto rows = guardkit::test::parse_jsonl(guardkit::read_file(file));
  std::sort(rows.begin(), rows.end(), [](const json& a, const json& b) { return a["id"] < b["id"]; });
  return rows;
}

TEST(CliShard, ThreeShardsOneKilledAndRerunMergeToTheSingleRun) {
  const fs::path dir = guardkit::test::temp_dir("cli_shard");
  {
    std::ofstream data(dir / "data.jsonl");
    for (int i = 0; i < 240; ++i)
      data << json{{"id", fmt::format("row-{}", i)},
                   {"prompt", fmt::format("message {}: {}", i, i % 3 ? "how do I bake bread?" : "how do I hurt someone?")},
                   {"response", nullptr},
                   {"label", i % 3 ? 0 : 1},
                   {"categories", json::array()},
                   {"source", "test"}}
                  .dump()
           << "\n";
  }
  const std::string common = fmt::format("eval --model {} --data {} --batch-size 1 --bootstrap 20 --no-progress",
                                         guardkit::test::fixture("deberta").string(), (dir / "data.jsonl").string());
  const auto single = run_guardkit(common + fmt::format(" --predictions {} --json {}", (dir / "single").string(),
                                                        (dir / "single.json").string()), "");
  ASSERT_EQ(single.exit_code, 0) << single.output;

  auto shard_args = [&](int k) {
    return std::vector<std::string>{"eval", "--model", guardkit::test::fixture("deberta").string(), "--data",
                                    (dir / "data.jsonl").string(), "--batch-size", "1", "--bootstrap", "20",
                                    "--no-progress", "--shard", fmt::format("{}/3", k), "--predictions",
                                    (dir / fmt::format("shard{}", k)).string()};
  };
  const std::string binary = std::string(GUARDKIT_BUILD_DIR) + "/guardkit";
  std::vector<std::unique_ptr<ChildProcess>> shards;
  for (int k = 0; k < 3; ++k) shards.push_back(std::make_unique<ChildProcess>(binary, shard_args(k)));
  // Kill shard 1 once it has written a row.
  const fs::path log1 = dir / "shard1" / "data.predictions.jsonl";
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
       lines_in(log1) == 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ::kill(shards[1]->pid(), SIGKILL);
  EXPECT_EQ(shards[0]->wait_exit(std::chrono::seconds(120)), 0) << shards[0]->output();
  EXPECT_EQ(shards[2]->wait_exit(std::chrono::seconds(120)), 0) << shards[2]->output();
  EXPECT_NE(shards[1]->wait_exit(std::chrono::seconds(30)), 0);

  const std::string merge = fmt::format("merge --out {} {} {} {}", (dir / "merged").string(), (dir / "shard0").string(),
                                        (dir / "shard1").string(), (dir / "shard2").string());
  const size_t written_before_kill = lines_in(log1);
  if (!guardkit::test::load_json(dir / "shard1" / "shard.json")["complete"].get<bool>()) {
    const auto refused = run_guardkit(merge, "");
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.output.find("shard 1/3"), std::string::npos) << refused.output;
    EXPECT_NE(refused.output.find("not complete"), std::string::npos) << refused.output;
    EXPECT_FALSE(fs::exists(dir / "merged" / "data.predictions.jsonl"));
  } else {
    GTEST_LOG_(INFO) << "shard 1 finished before the kill; the rerun below resumes a complete shard";
  }
  const auto rerun = run_guardkit(common + fmt::format(" --shard 1/3 --predictions {}", (dir / "shard1").string()), "");
  ASSERT_EQ(rerun.exit_code, 0) << rerun.output;
  EXPECT_GE(lines_in(log1), written_before_kill);

  const auto merged = run_guardkit(merge, "");
  ASSERT_EQ(merged.exit_code, 0) << merged.output;
  EXPECT_NE(merged.output.find("merged 3 shards of 'eval' (240 rows"), std::string::npos) << merged.output;

  // The same rows as the single run (scores bit for bit: batch size 1 on both sides) ...
  const auto single_rows = sorted_by_id(dir / "single" / "data.predictions.jsonl");
  const auto merged_rows = sorted_by_id(dir / "merged" / "data.predictions.jsonl");
  ASSERT_EQ(single_rows.size(), 240u);
  EXPECT_EQ(merged_rows, single_rows);
  // ... and the same report, without scoring anything.
  const auto report = run_guardkit(common + fmt::format(" --predictions {} --json {}", (dir / "merged").string(),
                                                        (dir / "merged.json").string()), "");
  ASSERT_EQ(report.exit_code, 0) << report.output;
  const json a = guardkit::test::load_json(dir / "single.json"), b = guardkit::test::load_json(dir / "merged.json");
  EXPECT_EQ(b["datasets"][0]["scored_this_run"], 0);
  for (const char* field : {"examples", "positives", "predicted_positives", "confusion", "metrics", "tokens", "flops"})
    EXPECT_EQ(a["datasets"][0][field], b["datasets"][0][field]) << field;
  EXPECT_EQ(a["average"]["metrics"], b["average"]["metrics"]);
}

}  // namespace
