// A serving fleet behind a real load balancer: Debian's haproxy (health checks on /readyz, least connections) in
// front of two `guardkit serve` replicas on loopback. Mid-load, one replica gets SIGTERM: it turns /readyz 503,
// keeps answering for --drain-seconds while haproxy takes it out, then closes its listener after answering what it
// accepted, and exits 0. No client request is lost or fails, and every score equals the replica-direct answer.
#include <gtest/gtest.h>
#include <httplib.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include <fmt/format.h>

#include "child_process.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using guardkit::test::ChildProcess;
using guardkit::test::ServeProcess;
using Clock = std::chrono::steady_clock;

const char* kHaproxy = "/usr/sbin/haproxy";

// A port no one listens on right now (bound to 0, read back, closed).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// The haproxy setup docs/SCALING.md recommends: readiness checks every 200 ms, a replica out after one failed check,
// and a request whose connection fails (a replica that just closed its listener) retried on the other replica.
std::string haproxy_config(int listen_port, int port_a, int port_b) {
  return fmt::format(R"(global
  maxconn 512
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend guard
  bind 127.0.0.1:{}
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 200ms fall 1 rise 2
  server a 127.0.0.1:{} check
  server b 127.0.0.1:{} check
)",
                     listen_port, port_a, port_b);
}

std::string text_of(int row) { return fmt::format("request {} asks how to bake bread, variant {}", row, row % 7); }

size_t lines_of(const std::filesystem::path& file) {
  std::ifstream in(file);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

TEST(CliHaproxyDrain, AReplicaDrainedWithSigtermMidLoadLosesNoRequest) {
  if (!std::filesystem::exists(kHaproxy)) GTEST_SKIP() << "haproxy is not installed (scripts/install-deps.sh installs it)";
  const auto dir = guardkit::test::temp_dir("haproxy_drain");
  const std::string guard = guardkit::test::fixture("deberta").string();
  auto replica = [&](const std::string& name) {
    return std::make_unique<ServeProcess>(std::vector<std::string>{
        "--small", guard, "--port", "0", "--workers", "1", "--drain-seconds", "1.5",
        "--access-log", (dir / (name + ".log")).string()});
  };
  auto a = replica("a");
  auto b = replica("b");
  const int port_a = a->wait_for_port(std::chrono::seconds(90));
  const int port_b = b->wait_for_port(std::chrono::seconds(90));
  ASSERT_GT(port_a, 0) << a->output();
  ASSERT_GT(port_b, 0) << b->output();

  const int listen_port = free_port();
  std::ofstream(dir / "haproxy.cfg") << haproxy_config(listen_port, port_a, port_b);
  ChildProcess haproxy(kHaproxy, {"-db", "-f", (dir / "haproxy.cfg").string()});
  httplib::Client probe("127.0.0.1", listen_port);
  bool up = false;
  for (auto until = Clock::now() + std::chrono::seconds(20); !up && Clock::now() < until;) {
    auto r = probe.Get("/readyz");
    up = r && r->status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << haproxy.output();

  // Four clients send rows until told to stop; every answer is kept.
  std::atomic<int> next_row{0}, completed{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::map<int, std::pair<int, double>> answers;  // row -> (status, unsafe_score)
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&] {
      httplib::Client client("127.0.0.1", listen_port);
      client.set_read_timeout(std::chrono::seconds(30));
      while (!stop) {
        const int row = next_row++;
        auto r = client.Post("/v1/moderations", json{{"input", text_of(row)}}.dump(), "application/json");
        std::pair<int, double> answer{r ? r->status : 0, -1.0};
        if (r && r->status == 200) answer.second = json::parse(r->body)["results"][0]["unsafe_score"].get<double>();
        std::lock_guard lock(mutex);
        answers[row] = answer;
        ++completed;
      }
    });
  auto wait_completed = [&](int n) {
    for (auto until = Clock::now() + std::chrono::seconds(60); completed < n && Clock::now() < until;)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return completed >= n;
  };

  EXPECT_TRUE(wait_completed(60));
  const size_t a_before = lines_of(dir / "a.log");
  const int exit_a = a->terminate(std::chrono::seconds(30));  // returns once the drain ended and A exited
  const int at_exit = completed;
  EXPECT_TRUE(wait_completed(at_exit + 60));
  stop = true;
  for (auto& t : clients) t.join();

  EXPECT_EQ(exit_a, 0) << a->output();
  EXPECT_NE(a->output().find("draining: /readyz answers 503"), std::string::npos) << a->output();
  EXPECT_GT(a_before, 0u) << "replica a served nothing before the drain";
  EXPECT_GT(lines_of(dir / "b.log"), 0u);
  ASSERT_EQ(answers.size(), static_cast<size_t>(next_row.load()));
  int failed = 0;
  for (const auto& [row, answer] : answers) failed += answer.first != 200;
  EXPECT_EQ(failed, 0) << "requests answered with an error or lost during the drain";

  // Scores through the balancer equal replica b's direct answer for the same text.
  httplib::Client direct("127.0.0.1", port_b);
  for (int row = 0; row < static_cast<int>(answers.size()); row += 17) {
    auto r = direct.Post("/v1/moderations", json{{"input", text_of(row)}}.dump(), "application/json");
    ASSERT_TRUE(r && r->status == 200);
    EXPECT_NEAR(answers[row].second, json::parse(r->body)["results"][0]["unsafe_score"].get<double>(), 1e-5) << row;
  }
  EXPECT_EQ(b->terminate(std::chrono::seconds(30)), 0) << b->output();
  haproxy.terminate(std::chrono::seconds(10));
}

}  // namespace
