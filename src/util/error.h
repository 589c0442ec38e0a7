// guardkit's one exception type: a one-line, user-facing message that names what was wrong and where.
#pragma once
#include <stdexcept>
#include <string>
#include <fmt/format.h>

namespace guardkit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace guardkit
