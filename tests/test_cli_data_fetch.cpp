// `guardkit data fetch` against a loopback mirror serving shared/data at the paths of the compiled-in GitHub URLs:
// byte-identical files, a rerun downloads nothing, a killed run resumes, corrupted bytes / a 404 / a refused port
// give clear errors, a non-zero exit and no file in place. The table itself is checked against shared/data.
#include <httplib.h>
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <regex>
#include <set>

#include "eval/data_fetch.h"
#include "eval/datasets.h"
#include "loopback_server.h"
#include "test_util.h"

namespace fs = std::filesystem;
using guardkit::eval::data_sources;
using guardkit::test::run_guardkit;

namespace {

fs::path shared_data() { return guardkit::shared_dir() / "data"; }

std::string percent_decode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// A mirror of raw.githubusercontent.com on 127.0.0.1: "/OWNER/REPO/COMMIT/PATH" -> the shared/data copy. Files in
// `corrupt` are served with one byte flipped (same size), files in `missing` as 404.
struct Mirror {
  guardkit::test::LoopbackServer loopback;
  std::map<std::string, std::string> files;  // URL path -> path under the data folder
  std::set<std::string> corrupt, missing;
  std::atomic<int> served{0};

  Mirror() {
    const std::string prefix = guardkit::eval::kGithubRawPrefix;
    for (const auto& source : data_sources()) files[percent_decode(source.url.substr(prefix.size() - 1))] = source.path;
    loopback.server.Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      auto it = files.find(req.path);
      if (it == files.end() || missing.count(it->second)) {
        res.status = 404;
        res.set_content("404: Not Found", "text/plain");
        return;
      }
      std::string body = guardkit::read_file(shared_data() / it->second);
      if (corrupt.count(it->second)) body[body.size() / 2] ^= 0x20;
      ++served;
      res.set_content(body, "application/octet-stream");
    });
  }
  std::string fetch_args(const fs::path& out) const {
    return "data fetch --out " + out.string() + " --mirror " + loopback.url("/") + " --only advbench";
  }
};

std::vector<std::string> advbench_files() {
  std::vector<std::string> paths;
  for (const auto& source : data_sources())
    if (source.path.rfind("advbench/", 0) == 0) paths.push_back(source.path);
  return paths;
}

bool any_part_file(const fs::path& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.path().extension() == ".part") return true;
  return false;
}

}  // namespace

// The compiled-in table matches the copies in shared/data byte for byte, and covers every registry folder.
TEST(CliDataFetch, TableMatchesSharedData) {
  const std::regex url_shape(R"(https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/.+)");
  std::set<std::string> folders;
  for (const auto& source : data_sources()) {
    SCOPED_TRACE(source.path);
    EXPECT_TRUE(std::regex_match(source.url, url_shape)) << source.url;
    ASSERT_TRUE(fs::is_regular_file(shared_data() / source.path));
    EXPECT_EQ(fs::file_size(shared_data() / source.path), source.size);
    EXPECT_EQ(guardkit::eval::sha256_file(shared_data() / source.path), source.sha256);
    folders.insert(source.path.substr(0, source.path.find('/')));
  }
  for (const auto& info : guardkit::eval::dataset_registry()) {
    if (!info.folder.empty()) {  // empty: a view over other sets
      EXPECT_TRUE(folders.count(info.folder)) << info.name;
    }
  }
  EXPECT_EQ(advbench_files().size(), 3u);  // two CSVs and the licence
}

TEST(CliDataFetch, DownloadsByteIdenticalFilesThenSkipsThemAndResumes) {
  Mirror mirror;
  const fs::path out = guardkit::test::temp_dir("data_fetch_ok");
  auto first = run_guardkit(mirror.fetch_args(out), "");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("summary: 3 downloaded, 0 already present, 0 failed"), std::string::npos) << first.output;
  for (const auto& path : advbench_files())
    EXPECT_EQ(guardkit::read_file(out / path), guardkit::read_file(shared_data() / path)) << path;
  EXPECT_EQ(mirror.served, 3);
  EXPECT_FALSE(any_part_file(out));

  auto second = run_guardkit(mirror.fetch_args(out), "");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("summary: 0 downloaded, 3 already present, 0 failed"), std::string::npos)
      << second.output;
  EXPECT_EQ(mirror.served, 3);  // nothing requested again

  // A run killed mid-file leaves a partial .part and no target, and a local copy edited by hand differs: the rerun
  // fetches just those two files.
  fs::remove(out / "advbench/harmful_strings.csv");
  guardkit::write_file_atomic(out / "advbench/harmful_strings.csv.part", "target\nSure, here");
  guardkit::write_file_atomic(out / "advbench/harmful_behaviors.csv", "goal,target\nedited,by hand\n");
  auto resumed = run_guardkit(mirror.fetch_args(out), "");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("summary: 2 downloaded, 1 already present, 0 failed"), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("harmful_behaviors.csv (80.2 KB) downloaded (replaced a copy whose sha256 differed)"),
            std::string::npos)
      << resumed.output;
  for (const auto& path : advbench_files())
    EXPECT_EQ(guardkit::read_file(out / path), guardkit::read_file(shared_data() / path)) << path;
  EXPECT_EQ(mirror.served, 5);
  EXPECT_FALSE(any_part_file(out));
  fs::remove_all(out);
}

TEST(CliDataFetch, CorruptedBytesAndMissingFileFailClearlyAndLeaveNothing) {
  Mirror mirror;
  mirror.corrupt.insert("advbench/harmful_strings.csv");
  mirror.missing.insert("advbench/LICENSE");
  const fs::path out = guardkit::test::temp_dir("data_fetch_bad");
  auto run = run_guardkit(mirror.fetch_args(out), "");
  EXPECT_NE(run.exit_code, 0) << run.output;
  std::string expected_sha;
  for (const auto& source : data_sources())
    if (source.path == "advbench/harmful_strings.csv") expected_sha = source.sha256;
  EXPECT_NE(run.output.find("advbench/harmful_strings.csv: sha256 mismatch: expected " + expected_sha + ", got "),
            std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("HTTP 404 for " + mirror.loopback.url("/")), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("summary: 1 downloaded, 0 already present, 2 failed"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(out / "advbench/harmful_strings.csv"));
  EXPECT_FALSE(fs::exists(out / "advbench/LICENSE"));
  EXPECT_TRUE(fs::exists(out / "advbench/harmful_behaviors.csv"));  // the good file is kept
  EXPECT_FALSE(any_part_file(out));
  fs::remove_all(out);
}

TEST(CliDataFetch, RefusedPortAndUnknownNameFailClearly) {
  int port = 0;
  { guardkit::test::LoopbackServer closed; port = closed.port(); }  // bound, then closed: connections are refused
  const fs::path out = guardkit::test::temp_dir("data_fetch_refused");
  const std::string mirror = "http://127.0.0.1:" + std::to_string(port) + "/";
  auto run = run_guardkit("data fetch --out " + out.string() + " --mirror " + mirror + " --only advbench", "");
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("cannot connect to http://127.0.0.1:" + std::to_string(port)), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("summary: 0 downloaded, 0 already present, 3 failed"), std::string::npos) << run.output;
  for (const auto& path : advbench_files()) EXPECT_FALSE(fs::exists(out / path)) << path;

  auto unknown = run_guardkit("data fetch --out " + out.string() + " --only no_such_set", "");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("unknown dataset or folder 'no_such_set'"), std::string::npos) << unknown.output;
  fs::remove_all(out);
}
