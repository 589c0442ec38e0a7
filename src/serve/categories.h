// Llama Guard 3 hazard categories (S1-S14, MLCommons taxonomy) mapped onto the category keys of OpenAI's moderation
// API, so /v1/moderations answers in the shape existing OpenAI clients read.
//
// | S-code | Llama Guard 3 category      | OpenAI keys                               |
// |--------|-----------------------------|-------------------------------------------|
// | S1     | Violent Crimes              | violence, illicit/violent                 |
// | S2     | Non-Violent Crimes          | illicit                                   |
// | S3     | Sex-Related Crimes          | sexual, illicit/violent                   |
// | S4     | Child Sexual Exploitation   | sexual/minors                             |
// | S5     | Defamation                  | harassment                                |
// | S6     | Specialized Advice          | (none: reported as S6 only)               |
// | S7     | Privacy                     | (none: reported as S7 only)               |
// | S8     | Intellectual Property       | illicit                                   |
// | S9     | Indiscriminate Weapons      | violence, illicit/violent                 |
// | S10    | Hate                        | hate                                      |
// | S11    | Suicide & Self-Harm         | self-harm                                 |
// | S12    | Sexual Content              | sexual                                    |
// | S13    | Elections                   | (none: reported as S13 only)              |
// | S14    | Code Interpreter Abuse      | illicit                                   |
//
// Qwen3Guard-Gen names its categories (the code is the name):
//
// | Qwen3Guard category            | OpenAI keys                 |
// |--------------------------------|-----------------------------|
// | Violent                        | violence, illicit/violent   |
// | Non-violent Illegal Acts       | illicit                     |
// | Sexual Content or Sexual Acts  | sexual                      |
// | PII                            | (none: reported by name)    |
// | Suicide & Self-Harm            | self-harm                   |
// | Unethical Acts                 | (none)                      |
// | Politically Sensitive Topics   | (none)                      |
// | Copyright Violation            | illicit                     |
// | Jailbreak                      | (none)                      |
//
// OpenAI keys without a Llama Guard counterpart (harassment/threatening, hate/threatening, self-harm/intent,
// self-harm/instructions, violence/graphic) are always false / 0. A key's score is the guard's P(unsafe) when one of
// its S-codes was named, else 0. A guard that names no categories (a binary classifier) flags the input with every
// OpenAI key false — clients read `flagged`, and the S-code list is empty.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::serve {

struct HazardCategory {
  std::string_view code;         // "S1"
  std::string_view name;         // "Violent Crimes"
  std::vector<std::string_view> openai_keys;
};

// S1..S14 in order.
const std::vector<HazardCategory>& llama_guard_categories();
// Qwen3Guard-Gen's 9 categories in its prompt's order.
const std::vector<HazardCategory>& qwen3_guard_categories();
// The 13 category keys of OpenAI's omni-moderation, in the order OpenAI returns them.
const std::vector<std::string_view>& openai_category_keys();
// The OpenAI keys a Llama Guard S-code or a Qwen3Guard category maps to (empty for unknown and unmapped ones).
std::vector<std::string_view> openai_keys_for(std::string_view code);
// "Violent Crimes" for "S1"; "" if unknown.
std::string_view category_name(std::string_view code);

}  // namespace guardkit::serve
