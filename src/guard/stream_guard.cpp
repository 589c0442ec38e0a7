#include "guard/stream_guard.h"

#include <torch/torch.h>

#include "io/safetensors.h"
#include "models/llama.h"
#include "models/runtime.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace guardkit::guard {

const std::vector<std::string>& stream_risk_levels() {
  static const std::vector<std::string> levels = {"Safe", "Unsafe", "Controversial"};
  return levels;
}

const std::vector<std::string>& stream_categories(bool query_branch) {
  static const std::vector<std::string> response = {
      "Violent", "Sexual Content or Sexual Acts", "Suicide & Self-Harm", "Politically Sensitive Topics", "PII",
      "Copyright Violation", "Non-violent Illegal Acts", "Unethical Acts"};
  static const std::vector<std::string> query = [] {
    auto list = response;
    list.push_back("Jailbreak");
    return list;
  }();
  return query_branch ? query : response;
}

const std::string& StreamVerdict::risk_level() const { return stream_risk_levels().at(static_cast<size_t>(risk)); }

ConsecutiveVerdict consecutive_unsafe(const std::vector<std::string>& labels) {
  ConsecutiveVerdict v;
  for (size_t i = 0; i + 1 < labels.size(); ++i) {
    if (v.unsafe_at < 0 && labels[i] == "Unsafe" && labels[i + 1] == "Unsafe") v.unsafe_at = static_cast<int64_t>(i + 1);
    if (v.controversial_at < 0 && labels[i] == "Controversial" && labels[i + 1] == "Controversial")
      v.controversial_at = static_cast<int64_t>(i + 1);
  }
  return v;
}

StreamGuard::~StreamGuard() = default;

const std::vector<std::string>& StreamGuard::head_names() {
  static const std::vector<std::string> names = {
      "risk_level_category_pre.weight",       "risk_level_category_layernorm.weight",
      "risk_level_head.weight",               "category_head.weight",
      "query_risk_level_category_pre.weight", "query_risk_level_category_layernorm.weight",
      "query_risk_level_head.weight",         "query_category_head.weight"};
  return names;
}

std::shared_ptr<StreamGuard> StreamGuard::load(const std::filesystem::path& dir, const std::filesystem::path& heads,
                                               const std::string& dtype, const std::string& device) {
  auto backbone = models::LlamaModel::load(dir, models::parse_dtype(dtype), models::parse_device(device), head_names());
  std::shared_ptr<text::Tokenizer> tokenizer = text::load_tokenizer(dir);
  auto checkpoint = std::make_shared<const io::Checkpoint>(io::Checkpoint::open(heads.empty() ? dir : heads));
  // The heads are tiny: float32 on the backbone's device whatever its dtype.
  models::WeightLoader loader(checkpoint, at::kFloat, backbone->device());
  auto guard = from_parts(backbone, tokenizer, [&](const std::string& name) { return loader.get(name); });
  if (!heads.empty()) loader.check_all_used();
  return guard;
}

std::shared_ptr<StreamGuard> StreamGuard::from_parts(std::shared_ptr<models::LlamaModel> backbone,
                                                     std::shared_ptr<text::Tokenizer> tokenizer,
                                                     const std::function<at::Tensor(const std::string& name)>& head) {
  if (!backbone || !tokenizer) fail("stream guard: needs a backbone and a tokenizer");
  if (!backbone->config().qk_norm) fail("stream guard: the backbone must be a Qwen3 model (model_type qwen3)");
  std::shared_ptr<StreamGuard> guard(new StreamGuard());
  guard->backbone_ = std::move(backbone);
  guard->tokenizer_ = std::move(tokenizer);
  guard->eps_ = guard->backbone_->config().rms_norm_eps;
  const int64_t H = guard->backbone_->config().hidden_size;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) {
    // A copy: a loaded tensor may alias the checkpoint's mmap, which does not outlive load(). The heads are tiny.
    at::Tensor t = head(name).to(guard->backbone_->device(), at::kFloat).contiguous().clone();
    if (t.sizes().vec() != shape)
      fail("stream guard: head tensor '{}' has shape [{}], expected [{}]", name, fmt::join(t.sizes().vec(), ", "),
           fmt::join(shape, ", "));
    return t;
  };
  const int64_t inner = head("risk_level_category_pre.weight").size(0);
  auto branch = [&](const std::string& prefix, int64_t categories) {
    Branch b;
    b.pre = get(prefix + "risk_level_category_pre.weight", {inner, H});
    b.norm = get(prefix + "risk_level_category_layernorm.weight", {inner});
    b.risk_head = get(prefix + "risk_level_head.weight", {3, inner});
    b.category_head = get(prefix + "category_head.weight", {categories, inner});
    return b;
  };
  guard->response_ = branch("", 8);
  guard->query_ = branch("query_", 9);
  return guard;
}

int64_t StreamGuard::guard_inner_size() const { return response_.pre.size(0); }

at::Tensor StreamGuard::branch_logits(const at::Tensor& hidden, const Branch& b, bool risk) const {
  at::Tensor x = at::linear(hidden, b.pre);                                             // [T, inner]
  x = b.norm * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps_));            // RMSNorm, float32
  return at::linear(x, risk ? b.risk_head : b.category_head);                           // [T, 3] or [T, n]
}

StreamVerdict StreamGuard::judge(const at::Tensor& hidden_row, const Branch& b) const {
  at::Tensor h = hidden_row.view({1, -1});
  at::Tensor risk = branch_logits(h, b, true)[0].to(at::kCPU).contiguous();
  at::Tensor category = branch_logits(h, b, false)[0].to(at::kCPU).contiguous();
  StreamVerdict v;
  v.risk_logits.assign(risk.data_ptr<float>(), risk.data_ptr<float>() + risk.numel());
  v.category_logits.assign(category.data_ptr<float>(), category.data_ptr<float>() + category.numel());
  v.risk = static_cast<int>(risk.argmax().item<int64_t>());
  v.risk_prob = at::softmax(risk.to(at::kDouble), 0)[v.risk].item<double>();
  v.category = static_cast<int>(category.argmax().item<int64_t>());
  return v;
}

StreamGuard::Session::Session(const StreamGuard& guard)
    : guard_(&guard), cache_(std::make_unique<models::KVCache>(guard.backbone_->new_cache(1, 256))) {}
StreamGuard::Session::Session(Session&&) noexcept = default;
StreamGuard::Session& StreamGuard::Session::operator=(Session&&) noexcept = default;
StreamGuard::Session::~Session() = default;

StreamGuard::Session StreamGuard::start() const { return Session(*this); }

StreamVerdict StreamGuard::Session::judge_user(const std::vector<int64_t>& ids) {
  if (ids.empty()) fail("stream guard: empty user part");
  models::ForwardOptions options;
  options.logits = models::LogitsMode::None;
  models::ForwardOutput out = guard_->backbone_->forward(ids, cache_.get(), options);
  length_ += static_cast<int64_t>(ids.size());
  return guard_->judge(out.last_hidden[0], guard_->query_);
}

StreamVerdict StreamGuard::Session::next(int64_t token) {
  models::ForwardOptions options;
  options.logits = models::LogitsMode::None;
  models::ForwardOutput out = guard_->backbone_->forward(std::vector<int64_t>{token}, cache_.get(), options);
  ++length_;
  return guard_->judge(out.last_hidden[0], guard_->response_);
}

void StreamGuard::Session::truncate(int64_t length) {
  if (length < 0 || length > length_) fail("stream guard: cannot keep {} of {} cached tokens", length, length_);
  if (length == length_) return;
  *cache_ = cache_->select_rows({0}, 64, length);
  length_ = length;
}

StreamGuard::FullLogits StreamGuard::full(const std::vector<int64_t>& ids) const {
  models::ForwardOptions options;
  options.logits = models::LogitsMode::None;
  options.all_hidden = true;
  at::Tensor hidden = backbone_->forward(ids, nullptr, options).hidden[0];  // [T, H]
  return {branch_logits(hidden, response_, true).cpu(), branch_logits(hidden, response_, false).cpu(),
          branch_logits(hidden, query_, true).cpu(), branch_logits(hidden, query_, false).cpu()};
}

namespace {
int64_t special_id(const text::Tokenizer& tokenizer, const char* token) {
  auto id = tokenizer.token_to_id(token);
  if (!id) fail("stream guard: the tokenizer has no {} token (not a Qwen3 tokenizer?)", token);
  return *id;
}
void append_text(const text::Tokenizer& tokenizer, const std::string& text, std::vector<int64_t>& ids) {
  for (int32_t id : tokenizer.encode_plain(text)) ids.push_back(id);
}
}  // namespace

std::vector<int64_t> StreamGuard::user_part_ids(const std::vector<std::pair<std::string, std::string>>& messages) const {
  size_t last_user = messages.size();
  for (size_t i = 0; i < messages.size(); ++i)
    if (messages[i].first == "user") last_user = i;
  if (last_user == messages.size()) fail("stream guard: the conversation has no user message");
  const int64_t im_start = special_id(*tokenizer_, "<|im_start|>"), im_end = special_id(*tokenizer_, "<|im_end|>");
  std::vector<int64_t> ids;
  for (size_t i = 0; i <= last_user; ++i) {
    const auto& [role, content] = messages[i];
    if (role != "user" && role != "assistant" && role != "system")
      fail("stream guard: message role '{}' (user, assistant or system)", role);
    ids.push_back(im_start);
    append_text(*tokenizer_, role + "\n" + content, ids);
    ids.push_back(im_end);
    append_text(*tokenizer_, "\n", ids);
  }
  ids.pop_back();  // the user part ends at its <|im_end|>; the "\n" after it starts the assistant side
  return ids;
}

std::vector<int64_t> StreamGuard::assistant_header_ids() const {
  std::vector<int64_t> ids;
  append_text(*tokenizer_, "\n", ids);
  ids.push_back(special_id(*tokenizer_, "<|im_start|>"));
  append_text(*tokenizer_, "assistant\n", ids);
  ids.push_back(special_id(*tokenizer_, "<think>"));
  append_text(*tokenizer_, "\n\n", ids);
  ids.push_back(special_id(*tokenizer_, "</think>"));
  return ids;  // the "\n\n" after </think> is pre-tokenized with the content that follows it
}

// ---------------------------------------------------------------------------------------------------------------
// StreamModeration

StreamModeration::StreamModeration(std::shared_ptr<const StreamGuard> guard, StreamModerationOptions options)
    : guard_(std::move(guard)), options_(options) {
  if (!guard_) fail("stream moderation needs a stream guard");
  if (options_.hold_back_tokens < 0) fail("stream moderation: hold_back_tokens must be >= 0");
}

StreamVerdict StreamModeration::judge_user(const std::vector<std::pair<std::string, std::string>>& messages) {
  session_.emplace(guard_->start());
  StreamVerdict verdict = session_->judge_user(guard_->user_part_ids(messages));
  // The template's assistant header runs through the backbone too; its tokens are not the answer's.
  for (int64_t id : guard_->assistant_header_ids()) session_->next(id);
  answer_start_ = session_->length();
  return verdict;
}

size_t StreamModeration::feed(std::string_view delta) {
  if (!session_) fail("stream moderation: judge_user first");
  text_.append(delta);
  return advance(false);
}

size_t StreamModeration::finish() {
  if (!session_) fail("stream moderation: judge_user first");
  return advance(true);
}

size_t StreamModeration::advance(bool final) {
  if (cut()) return released_;
  // "\n\n" after </think> is pre-tokenized with the answer (the template writes them together).
  std::vector<int32_t> ids = guard_->tokenizer().encode_plain("\n\n" + text_);
  size_t same = 0;
  while (same < fed_.size() && same < ids.size() && fed_[same] == ids[same]) ++same;
  if (same < fed_.size()) {  // the tail was re-tokenized (rare): run it again
    session_->truncate(answer_start_ + static_cast<int64_t>(same));
    fed_.resize(same);
    labels_.resize(same);
    flagged_.resize(same);
  }
  // The last token can still grow into another one while text arrives: judge it only at the end.
  const size_t settled = final ? ids.size() : (ids.empty() ? 0 : ids.size() - 1);
  for (size_t k = fed_.size(); k < settled; ++k) {
    StreamVerdict v = session_->next(ids[k]);
    fed_.push_back(ids[k]);
    labels_.push_back(v.risk_level());
    flagged_.push_back(flags(v));
    if (k > 0 && flagged_[k] && flagged_[k - 1]) {
      cut_at_ = static_cast<int64_t>(k);
      return released_;
    }
  }
  if (final) {
    released_ = text_.size();
    return released_;
  }
  const int64_t judged = static_cast<int64_t>(fed_.size()) - options_.hold_back_tokens;
  if (judged > 0) released_ = std::max(released_, releasable(static_cast<size_t>(judged)));
  return released_;
}

// Bytes of the answer covered by its first `tokens` tokens: their decoded text (minus the leading "\n\n") when it is
// a prefix of the answer; a token that ends inside a multi-byte character, or text the NFC normalizer changed,
// is not released until later tokens (or the end) cover it.
size_t StreamModeration::releasable(size_t tokens) const {
  for (size_t k = tokens; k > 0 && tokens - k < 4; --k) {
    std::vector<int32_t> prefix(fed_.begin(), fed_.begin() + static_cast<std::ptrdiff_t>(k));
    const std::string decoded = guard_->tokenizer().decode(prefix, /*skip_special_tokens=*/false);
    if (decoded.size() < 2 || decoded.compare(0, 2, "\n\n") != 0) continue;
    const std::string_view body = std::string_view(decoded).substr(2);
    if (std::string_view(text_).substr(0, body.size()) == body) return body.size();
  }
  return released_;
}

}  // namespace guardkit::guard
