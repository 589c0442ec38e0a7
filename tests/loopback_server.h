// An httplib server on an ephemeral 127.0.0.1 port, serving on its own thread until destroyed — the real server the
// network tests talk to. Include <httplib.h> in the test file itself too: the build adds cpp-httplib's defines only
// to sources that include it.
#pragma once
#include <httplib.h>

#include <chrono>
#include <string>
#include <thread>

namespace guardkit::test {

class LoopbackServer {
 public:
  LoopbackServer() {
    port_ = server.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LoopbackServer() {
    server.stop();
    thread_.join();
  }
  std::string url(const std::string& prefix = "") const { return "http://127.0.0.1:" + std::to_string(port_) + prefix; }
  int port() const { return port_; }
  httplib::Server server;

 private:
  int port_ = 0;
  std::thread thread_;
};

}  // namespace guardkit::test
