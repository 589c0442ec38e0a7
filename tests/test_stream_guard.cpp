// Qwen3Guard-Stream heads on the tiny Qwen3 backbone (shared/fixtures/qwen3/stream_guard): full-sequence logits of
// all four heads equal the goldens, the incremental run (user part at once, then one backbone step per token through
// the KV cache) gives the same rows, the labels and the consecutive_unsafe decision equal the recorded ones, and the
// conversation ids are the Qwen3 template's.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "guard/stream_guard.h"
#include "models/llama.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "util/error.h"

using namespace guardkit;
using namespace guardkit::guard;
using nlohmann::json;

namespace {

const json& cases() {
  static json data = test::load_json(test::fixture("qwen3/stream_guard/cases.json"));
  return data["cases"];
}

std::shared_ptr<StreamGuard> shared_guard() {
  static auto guard = StreamGuard::load(test::fixture("qwen3"), test::fixture("qwen3/stream_guard/model.safetensors"));
  return guard;
}

void expect_row(const std::vector<float>& got, const json& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t k = 0; k < got.size(); ++k) EXPECT_NEAR(got[k], want[k].get<double>(), tol) << what << " [" << k << "]";
}

std::vector<float> row_of(const at::Tensor& t, int64_t row) {
  at::Tensor r = t[row].contiguous();
  return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
}

std::vector<std::pair<std::string, std::string>> messages_of(const json& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& m : c["messages"]) out.emplace_back(m["role"], m["content"]);
  return out;
}

}  // namespace

TEST(StreamGuard, FullSequenceHeadsEqualTheGoldens) {
  auto guard = shared_guard();
  EXPECT_EQ(guard->guard_inner_size(), 16);
  for (const auto& c : cases()) {
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    auto full = guard->full(ids);
    const auto& want = c["full"];
    for (size_t t = 0; t < ids.size(); ++t) {
      const std::string what = c["name"].get<std::string>() + " t=" + std::to_string(t);
      expect_row(row_of(full.risk, t), want["risk_level_logits"][t], 1e-4, what + " risk");
      expect_row(row_of(full.category, t), want["category_logits"][t], 1e-4, what + " category");
      expect_row(row_of(full.query_risk, t), want["query_risk_level_logits"][t], 1e-4, what + " query risk");
      expect_row(row_of(full.query_category, t), want["query_category_logits"][t], 1e-4, what + " query category");
    }
  }
}

TEST(StreamGuard, StreamedRowsEqualFullRowsAndDecisions) {
  auto guard = shared_guard();
  for (const auto& c : cases()) {
    const std::string name = c["name"];
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    const size_t user_end = c["user_end_index"];
    auto full = guard->full(ids);
    auto session = guard->start();
    const auto& rows = c["stream_rows"];
    StreamVerdict user = session.judge_user(std::vector<int64_t>(ids.begin(), ids.begin() + user_end + 1));
    expect_row(user.risk_logits, rows[0]["query_risk_level_logits"], 1e-4, name + " user");
    expect_row(user.category_logits, rows[0]["query_category_logits"], 1e-4, name + " user");
    EXPECT_EQ(user.risk_level(), c["user_decision"]["risk_level"]) << name;
    EXPECT_NEAR(user.risk_prob, c["user_decision"]["risk_prob"].get<double>(), 1e-5) << name;
    EXPECT_EQ(stream_categories(true).at(user.category), c["user_decision"]["category"]) << name;
    std::vector<std::string> labels;
    for (size_t t = user_end + 1; t < ids.size(); ++t) {
      StreamVerdict v = session.next(ids[t]);
      const auto& row = rows[t - user_end];
      ASSERT_EQ(row["position"].get<size_t>(), t);
      const std::string what = name + " t=" + std::to_string(t);
      expect_row(v.risk_logits, row["risk_level_logits"], 1e-4, what);
      expect_row(v.category_logits, row["category_logits"], 1e-4, what);
      // streamed == one full pass (the fixture observed <= 4.7e-6)
      expect_row(v.risk_logits, json(row_of(full.risk, static_cast<int64_t>(t))), 1e-4, what + " vs full");
      labels.push_back(v.risk_level());
      EXPECT_EQ(stream_categories(false).at(v.category), c["response_token_category"][t - user_end - 1]) << what;
    }
    EXPECT_EQ(session.length(), static_cast<int64_t>(ids.size()));
    EXPECT_EQ(labels, c["response_token_risk"].get<std::vector<std::string>>()) << name;
    const ConsecutiveVerdict decision = consecutive_unsafe(labels);
    EXPECT_EQ(decision.unsafe_at, c["consecutive_unsafe"]["unsafe_at"].get<int64_t>()) << name;
    EXPECT_EQ(decision.controversial_at, c["consecutive_unsafe"]["controversial_at"].get<int64_t>()) << name;
  }
}

TEST(StreamGuard, TruncatedSessionContinuesLikeAFreshOne) {
  auto guard = shared_guard();
  const auto ids = cases()[0]["ids"].get<std::vector<int64_t>>();
  const size_t user_end = cases()[0]["user_end_index"];
  auto session = guard->start();
  session.judge_user(std::vector<int64_t>(ids.begin(), ids.begin() + user_end + 1));
  for (size_t t = user_end + 1; t < user_end + 6; ++t) session.next(ids[t]);
  session.next(7);  // a token the re-tokenized text replaces
  session.truncate(static_cast<int64_t>(user_end + 6));
  StreamVerdict again = session.next(ids[user_end + 6]);
  auto full = guard->full(ids);
  expect_row(again.risk_logits, json(row_of(full.risk, static_cast<int64_t>(user_end + 6))), 1e-4, "after truncate");
  EXPECT_THROW(session.truncate(1000), Error);
}

TEST(StreamGuard, ConversationIdsFollowTheQwen3Template) {
  auto guard = shared_guard();
  for (const auto& c : cases()) {
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    const size_t user_end = c["user_end_index"];
    auto messages = messages_of(c);
    const std::string answer = messages.back().second;
    messages.pop_back();
    std::vector<int64_t> built = guard->user_part_ids(messages);
    EXPECT_EQ(built, std::vector<int64_t>(ids.begin(), ids.begin() + user_end + 1)) << c["name"];
    for (int64_t id : guard->assistant_header_ids()) built.push_back(id);
    for (int32_t id : guard->tokenizer().encode_plain("\n\n" + answer)) built.push_back(id);
    built.push_back(*guard->tokenizer().token_to_id("<|im_end|>"));
    built.push_back(198);  // "\n"
    EXPECT_EQ(built, ids) << c["name"];
  }
}

TEST(StreamGuard, ConsecutiveRule) {
  EXPECT_EQ(consecutive_unsafe({"Safe", "Unsafe", "Safe", "Unsafe", "Unsafe"}).unsafe_at, 4);
  EXPECT_EQ(consecutive_unsafe({"Unsafe", "Safe", "Unsafe"}).unsafe_at, -1);
  EXPECT_EQ(consecutive_unsafe({"Controversial", "Controversial"}).controversial_at, 1);
  EXPECT_EQ(consecutive_unsafe({}).unsafe_at, -1);
}

// The proxy's moderation loop on the fixture answers fed a few characters at a time: the tokens judged are those of
// the whole answer, each judged once, their labels equal the fixture's rows, and the cut lands where the
// consecutive_unsafe rule says, with nothing of the cut pair released.
TEST(StreamModeration, ChunkedTextGivesTheFullSequenceLabelsAndCut) {
  auto guard = shared_guard();
  const size_t header = guard->assistant_header_ids().size();
  for (const auto& c : cases()) {
    const std::string name = c["name"];
    auto messages = messages_of(c);
    const std::string answer = messages.back().second;
    messages.pop_back();
    const auto all_labels = c["response_token_risk"].get<std::vector<std::string>>();
    const size_t answer_tokens = guard->tokenizer().encode_plain("\n\n" + answer).size();
    const std::vector<std::string> want(all_labels.begin() + static_cast<std::ptrdiff_t>(header),
                                        all_labels.begin() + static_cast<std::ptrdiff_t>(header + answer_tokens));
    const ConsecutiveVerdict rule = consecutive_unsafe(want);
    for (int64_t hold_back : {0, 2}) {
      StreamModerationOptions options;
      options.hold_back_tokens = hold_back;
      StreamModeration moderation(guard, options);
      StreamVerdict user = moderation.judge_user(messages);
      EXPECT_EQ(user.risk_level(), c["user_decision"]["risk_level"]) << name;
      size_t released = 0;
      for (size_t pos = 0; pos < answer.size() && !moderation.cut(); pos += 3) {
        const size_t now = moderation.feed(std::string_view(answer).substr(pos, 3));
        EXPECT_GE(now, released) << name;
        released = now;
      }
      if (!moderation.cut()) released = moderation.finish();
      EXPECT_EQ(moderation.cut_at_token(), rule.unsafe_at) << name << " hold_back " << hold_back;
      const size_t judged = moderation.labels().size();
      ASSERT_LE(judged, want.size()) << name;
      EXPECT_EQ(moderation.labels(), std::vector<std::string>(want.begin(), want.begin() + judged)) << name;
      EXPECT_EQ(moderation.steps(), static_cast<int64_t>(judged));
      if (moderation.cut()) {
        // Released text never reaches the cut pair (with a hold-back; without one, its first token may be out).
        const auto ids = guard->tokenizer().encode_plain("\n\n" + answer);
        std::vector<int32_t> before(ids.begin(), ids.begin() + rule.unsafe_at - (hold_back > 0 ? 1 : 0));
        const std::string safe_text = guard->tokenizer().decode(before);  // "\n\n" + the answer's start, or ""
        EXPECT_LE(released, safe_text.size() >= 2 ? safe_text.size() - 2 : 0) << name;
      } else {
        EXPECT_EQ(released, answer.size()) << name;
        EXPECT_EQ(judged, want.size()) << name;
      }
    }
  }
}
