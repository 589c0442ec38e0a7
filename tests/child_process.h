// A child process for the tests that run real programs (guardkit serve, haproxy): its stdout and stderr on one
// pipe read as it comes, bounded waits for a line, SIGTERM with a bounded wait for the exit code, SIGKILL on
// destruction if it is still running.
#pragma once
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace guardkit::test {

class ChildProcess {
 public:
  using Clock = std::chrono::steady_clock;
  ChildProcess(const std::string& binary, std::vector<std::string> args) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], STDERR_FILENO);
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out_ = fds[0];
    ::fcntl(out_, F_SETFL, O_NONBLOCK);
  }
  ~ChildProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reads the output until `pattern` matches (returns its first group, or the whole match) or the process exits or
  // the time is up (returns "").
  std::string wait_for(const std::regex& pattern, std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      read_available(200);
      std::smatch m;
      if (std::regex_search(output_, m, pattern)) return m.size() > 1 ? m[1].str() : m[0].str();
      if (reap()) {
        read_available(0);
        return "";
      }
    }
    return "";
  }
  // SIGTERM, then waits (bounded) for the exit code; -1 when it is still running at the limit.
  int terminate(std::chrono::seconds limit) {
    ::kill(pid_, SIGTERM);
    return wait_exit(limit);
  }
  int wait_exit(std::chrono::seconds limit) {
    const auto until = Clock::now() + limit;
    while (Clock::now() < until) {
      if (reap()) return exit_code_;
      read_available(50);
    }
    return -1;
  }
  const std::string& output() {
    read_available(0);
    return output_;
  }
  int exit_code() const { return exit_code_; }
  pid_t pid() const { return pid_; }

 private:
  bool reap() {
    if (exited_) return true;
    int status;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }
  void read_available(int wait_ms) {
    pollfd p{out_, POLLIN, 0};
    if (::poll(&p, 1, wait_ms) <= 0) return;
    char buffer[4096];
    for (ssize_t n; (n = ::read(out_, buffer, sizeof(buffer))) > 0;) output_.append(buffer, static_cast<size_t>(n));
  }
  pid_t pid_ = -1;
  int out_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  std::string output_;
};

#ifdef GUARDKIT_BUILD_DIR
// `guardkit serve ARGS` of this build; wait_for_port reads the bound port from its "listening" line.
class ServeProcess : public ChildProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args)
      : ChildProcess(std::string(GUARDKIT_BUILD_DIR) + "/guardkit", with_serve(std::move(args))) {}
  int wait_for_port(std::chrono::seconds limit) {
    const std::string port = wait_for(std::regex(R"(guardkit serve: http://127\.0\.0\.1:(\d+))"), limit);
    return port.empty() ? 0 : std::stoi(port);
  }

 private:
  static std::vector<std::string> with_serve(std::vector<std::string> args) {
    args.insert(args.begin(), "serve");
    return args;
  }
};
#endif

}  // namespace guardkit::test
