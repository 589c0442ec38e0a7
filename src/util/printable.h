// Makes untrusted text safe to put into a one-line error message: control characters and newlines are escaped.
#pragma once
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace guardkit {

inline std::string printable(std::string_view text, size_t max_chars = 200) {
  std::string out;
  for (unsigned char c : text) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

}  // namespace guardkit
