#include "guard/guard.h"

#include "util/error.h"

namespace guardkit::guard {

Conversation Conversation::from_prompt(std::string prompt) {
  return Conversation{{Message{"user", std::move(prompt)}}};
}

Conversation Conversation::from_pair(std::string prompt, std::optional<std::string> response) {
  Conversation conversation = from_prompt(std::move(prompt));
  if (response) conversation.messages.push_back(Message{"assistant", std::move(*response)});
  return conversation;
}

const std::string& Conversation::last_prompt() const {
  for (auto it = messages.rbegin(); it != messages.rend(); ++it)
    if (it->role == "user") return it->content;
  fail("conversation has no user message");
}

std::optional<std::string> Conversation::last_response() const {
  if (judges_response()) return messages.back().content;
  return std::nullopt;
}

}  // namespace guardkit::guard
