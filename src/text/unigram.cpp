#include "text/unigram.h"

#include <algorithm>
#include <cfloat>
#include <functional>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace {

constexpr float kUnkPenalty = 10.0f;

std::string byte_piece(uint8_t byte) { return fmt::format("<0x{:02X}>", byte); }

// "<0x41>" -> 0x41; -1 when the piece is not of that exact form.
int piece_to_byte(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

uint64_t mix(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return key;
}

std::string base64_decode(std::string_view in, const std::string& source) {
  auto value = [&](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t buffer = 0;
  int bits = 0;
  for (const char c : in) {
    if (c == '=') break;
    if (c == '\n' || c == '\r') continue;
    const int v = value(c);
    if (v < 0) fail("{}: precompiled_charsmap is not valid base64", source);
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

}  // namespace

UnigramModel::UnigramModel(SpmModel model, const std::string& source) : spec_(std::move(model)) {
  if (spec_.model_type != SpmModelType::Unigram)
    fail("{}: SentencePiece model_type {} is not supported (only unigram models are)", source,
         static_cast<int>(spec_.model_type));
  bool bytes_found[256] = {};
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  std::vector<std::string> user_defined;
  min_score_ = FLT_MAX;
  max_score_ = FLT_MIN;  // sic: SentencePiece starts from the smallest positive float
  for (size_t i = 0; i < spec_.pieces.size(); ++i) {
    const SpmPiece& piece = spec_.pieces[i];
    const auto id = static_cast<int32_t>(i);
    const bool segmentable =
        piece.type == PieceType::Normal || piece.type == PieceType::UserDefined || piece.type == PieceType::Unused;
    auto& map = segmentable ? normal_ : reserved_;
    if (!map.emplace(piece.piece, id).second)
      fail("{}: malformed SentencePiece model (piece {} \"{}\" is already defined)", source, i, piece.piece);
    if (piece.type == PieceType::UserDefined) user_defined.push_back(piece.piece);
    if (piece.type == PieceType::Unknown) {
      if (unk_id_ >= 0) fail("{}: malformed SentencePiece model (a second unknown piece at id {})", source, i);
      unk_id_ = id;
    }
    if (piece.type == PieceType::Byte) {
      if (!spec_.byte_fallback)
        fail("{}: malformed SentencePiece model (byte piece \"{}\" although byte_fallback is false)", source,
             piece.piece);
      const int byte = piece_to_byte(piece.piece);
      if (byte < 0) fail("{}: malformed SentencePiece model (invalid byte piece \"{}\")", source, piece.piece);
      bytes_found[byte] = true;
      byte_ids_[byte] = id;
    }
    if (piece.type == PieceType::Normal) {
      min_score_ = std::min(min_score_, piece.score);
      max_score_ = std::max(max_score_, piece.score);
    }
  }
  if (unk_id_ < 0) fail("{}: malformed SentencePiece model (no unknown piece)", source);
  if (spec_.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (!bytes_found[b])
        fail("{}: malformed SentencePiece model (byte_fallback is on but piece {} is missing)", source,
             byte_piece(static_cast<uint8_t>(b)));
  if (normal_.empty()) fail("{}: malformed SentencePiece model (no segmentable pieces)", source);

  PrecompiledCharsmap charsmap;
  if (!spec_.precompiled_charsmap.empty()) charsmap = PrecompiledCharsmap(spec_.precompiled_charsmap, source);
  NormalizerOptions options{spec_.add_dummy_prefix, spec_.remove_extra_whitespaces, spec_.escape_whitespaces,
                            spec_.treat_whitespace_as_suffix};
  normalizer_ = SpmNormalizer(std::move(charsmap), options, std::move(user_defined));
  build_trie();
}

UnigramModel UnigramModel::load(const std::filesystem::path& path) {
  return UnigramModel(SpmModel::load(path), path.string());
}

void UnigramModel::build_trie() {
  // Count edges first (upper bound: total piece bytes) to size the table at <= 50% load.
  size_t total_bytes = 0;
  for (const auto& [piece, id] : normal_) total_bytes += piece.size();
  size_t capacity = 16;
  while (capacity < total_bytes * 2 + 2) capacity <<= 1;
  table_keys_.assign(capacity, 0);
  table_children_.assign(capacity, -1);
  table_mask_ = capacity - 1;
  node_piece_.assign(1, -1);
  node_score_.assign(1, 0.0);
  for (const auto& [piece, id] : normal_) {
    int32_t node = 0;
    for (const char c : piece) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8 | static_cast<uint8_t>(c)) + 1;
      uint64_t slot = mix(key) & table_mask_;
      while (table_keys_[slot] != 0 && table_keys_[slot] != key) slot = (slot + 1) & table_mask_;
      if (table_keys_[slot] == 0) {
        table_keys_[slot] = key;
        table_children_[slot] = static_cast<int32_t>(node_piece_.size());
        node_piece_.push_back(-1);
        node_score_.push_back(0.0);
      }
      node = table_children_[slot];
    }
    const SpmPiece& p = spec_.pieces[static_cast<size_t>(id)];
    if (p.type == PieceType::Unused) continue;
    node_piece_[static_cast<size_t>(node)] = id;
    // As in SentencePiece, the score is a double (its user-defined branch makes the expression one); the user-defined
    // bonus depends only on the piece's byte length, so it is computed here once.
    node_score_[static_cast<size_t>(node)] =
        p.type == PieceType::UserDefined ? (static_cast<float>(piece.size()) * max_score_ - 0.1)
                                         : static_cast<double>(p.score);
  }
}

inline int32_t UnigramModel::child(int32_t node, uint8_t byte) const {
  const uint64_t key = (static_cast<uint64_t>(node) << 8 | byte) + 1;
  uint64_t slot = mix(key) & table_mask_;
  while (true) {
    const uint64_t k = table_keys_[slot];
    if (k == key) return table_children_[slot];
    if (k == 0) return -1;
    slot = (slot + 1) & table_mask_;
  }
}

void UnigramModel::viterbi(std::string_view normalized, std::vector<Segment>& path) const {
  path.clear();
  if (normalized.empty()) return;
  struct BestPathNode {
    int32_t id = -1;
    float best_path_score = 0;
    int32_t starts_at = -1;
  };
  const auto size = static_cast<int32_t>(normalized.size());
  const float unk_score = min_score_ - kUnkPenalty;
  thread_local std::vector<BestPathNode> best;
  best.assign(static_cast<size_t>(size) + 1, BestPathNode{});
  const auto* data = reinterpret_cast<const uint8_t*>(normalized.data());

  int32_t starts_at = 0;
  while (starts_at < size) {
    const float best_path_score_till_here = best[static_cast<size_t>(starts_at)].best_path_score;
    bool has_single_node = false;
    const int32_t mblen = std::min<int32_t>(utf8_char_length(data[starts_at]), size - starts_at);
    int32_t node = 0;
    for (int32_t key_pos = starts_at; key_pos < size;) {
      node = child(node, data[key_pos]);
      if (node < 0) break;
      ++key_pos;
      const int32_t id = node_piece_[static_cast<size_t>(node)];
      if (id < 0) continue;
      BestPathNode& target = best[static_cast<size_t>(key_pos)];
      const auto length = key_pos - starts_at;
      // The sum is a double too, compared against the stored float, as in SentencePiece.
      const double candidate = node_score_[static_cast<size_t>(node)] + best_path_score_till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = static_cast<float>(candidate);
        target.starts_at = starts_at;
        target.id = id;
      }
      if (!has_single_node && static_cast<int32_t>(length) == mblen) has_single_node = true;
    }
    if (!has_single_node) {
      BestPathNode& target = best[static_cast<size_t>(starts_at + mblen)];
      const float candidate = unk_score + best_path_score_till_here;
      if (target.starts_at == -1 || candidate > target.best_path_score) {
        target.best_path_score = candidate;
        target.starts_at = starts_at;
        target.id = unk_id_;
      }
    }
    starts_at += mblen;
  }

  int32_t ends_at = size;
  while (ends_at > 0) {
    const BestPathNode& node = best[static_cast<size_t>(ends_at)];
    if (node.starts_at < 0 || node.starts_at >= ends_at) fail("unigram segmentation found no path (internal error)");
    path.push_back(Segment{static_cast<uint32_t>(node.starts_at), static_cast<uint32_t>(ends_at), node.id});
    ends_at = node.starts_at;
  }
  std::reverse(path.begin(), path.end());
}

void UnigramModel::encode(std::string_view text, std::vector<int32_t>& ids, std::vector<std::string>* pieces) const {
  thread_local std::string normalized;
  thread_local std::vector<Segment> path;
  normalizer_.normalize(text, normalized);
  viterbi(normalized, path);
  // SentencePieceProcessor::PopulateSentencePieceText: unknown pieces become bytes with byte fallback, else a run
  // of consecutive unknown pieces becomes one.
  bool is_prev_unk = false;
  for (const Segment& segment : path) {
    const std::string_view surface(normalized.data() + segment.begin, segment.end - segment.begin);
    const bool is_unk = segment.id == unk_id_;
    if (is_unk && spec_.byte_fallback) {
      for (const char c : surface) {
        const auto byte = static_cast<uint8_t>(c);
        ids.push_back(byte_ids_[byte]);
        if (pieces) pieces->push_back(byte_piece(byte));
      }
    } else if (is_unk && is_prev_unk) {
      if (pieces) pieces->back().append(surface);
    } else {
      ids.push_back(segment.id);
      if (pieces) pieces->emplace_back(surface);
    }
    is_prev_unk = is_unk;
  }
}

std::vector<int32_t> UnigramModel::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  encode(text, ids, nullptr);
  return ids;
}

std::vector<std::string> UnigramModel::encode_as_pieces(std::string_view text) const {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  encode(text, ids, &pieces);
  return pieces;
}

std::optional<int32_t> UnigramModel::find_piece(std::string_view piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = normal_.find(piece); it != normal_.end()) return it->second;
  return std::nullopt;
}

int32_t UnigramModel::piece_to_id(std::string_view piece) const { return find_piece(piece).value_or(unk_id_); }

std::string UnigramModel::decode_pieces(const std::vector<std::string>& pieces) const {
  // SentencePieceProcessor::Decode (0.1.97): control pieces vanish, the unknown piece prints unk_surface, runs of
  // byte pieces are decoded as UTF-8 (U+FFFD per malformed byte), the first piece loses its leading "▁" and every
  // other "▁" becomes a space.
  std::string text;
  std::string bytes;
  auto flush_bytes = [&] {
    std::string_view rest = bytes;
    while (!rest.empty()) {
      size_t length = 0;
      if (decode_utf8_char(rest, &length)) text.append(rest.substr(0, length));
      else text.append("\xEF\xBF\xBD");
      rest.remove_prefix(length);
    }
    bytes.clear();
  };
  const bool strip_bos_space = spec_.add_dummy_prefix || spec_.remove_extra_whitespaces;
  for (const std::string& piece_text : pieces) {
    const int32_t id = piece_to_id(piece_text);
    if (is_byte(id)) {
      bytes.push_back(static_cast<char>(piece_to_byte(piece_text)));
      continue;
    }
    flush_bytes();
    if (is_control(id)) continue;
    if (is_unknown(id)) {
      text.append(id_to_piece(id) == piece_text ? spec_.unk_surface : piece_text);
      continue;
    }
    std::string_view piece = piece_text;
    if (text.empty() && strip_bos_space && piece.starts_with(kSpaceSymbol)) piece.remove_prefix(kSpaceSymbol.size());
    for (size_t pos = 0; pos < piece.size();) {
      if (piece.substr(pos).starts_with(kSpaceSymbol)) {
        text.push_back(' ');
        pos += kSpaceSymbol.size();
      } else {
        text.push_back(piece[pos++]);
      }
    }
  }
  flush_bytes();
  return text;
}

std::string UnigramModel::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (const int32_t id : ids) {
    if (!valid(id)) fail("cannot decode id {}: outside the vocabulary of {} pieces", id, spec_.pieces.size());
    pieces.push_back(id_to_piece(id));
  }
  return decode_pieces(pieces);
}

UnigramModel UnigramModel::from_tokenizer_json(const std::filesystem::path& path, bool* lowercase) {
  const std::string source = path.string();
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", source, e.what());
  }
  try {
    if (!root.is_object() || !root.contains("model") || !root["model"].is_object())
      fail("{}: no \"model\" object: not a Hugging Face tokenizer.json", source);
    const auto& model = root["model"];
    if (model.contains("type") && model["type"] != "Unigram")
      fail("{}: model.type is {}, not Unigram", source, model["type"].dump());
    if (!model.contains("vocab") || !model["vocab"].is_array())
      fail("{}: model.vocab must be a list of [piece, score] pairs", source);

    SpmModel spm;
    spm.byte_fallback = model.value("byte_fallback", false);
    const auto& vocab = model["vocab"];
    spm.pieces.reserve(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) {
      const auto& entry = vocab[i];
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number())
        fail("{}: model.vocab[{}] is not a [piece, score] pair", source, i);
      SpmPiece piece{entry[0].get<std::string>(), entry[1].get<float>(), PieceType::Normal};
      if (piece.piece.empty()) fail("{}: model.vocab[{}] is an empty piece", source, i);
      if (spm.byte_fallback && piece_to_byte(piece.piece) >= 0) piece.type = PieceType::Byte;
      spm.pieces.push_back(std::move(piece));
    }
    if (!model.contains("unk_id") || !model["unk_id"].is_number_integer())
      fail("{}: model.unk_id is missing (a Unigram model needs an unknown piece)", source);
    const auto unk_id = model["unk_id"].get<int64_t>();
    if (unk_id < 0 || static_cast<size_t>(unk_id) >= spm.pieces.size())
      fail("{}: model.unk_id {} is outside the vocabulary of {} pieces", source, unk_id, spm.pieces.size());
    spm.pieces[static_cast<size_t>(unk_id)].type = PieceType::Unknown;
    spm.unk_id = static_cast<int32_t>(unk_id);
    spm.unk_piece = spm.pieces[static_cast<size_t>(unk_id)].piece;

    // Added tokens that are vocabulary entries: special ones are control pieces (never produced by segmentation),
    // the others user-defined pieces (always kept whole).
    if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
      for (const auto& token : root["added_tokens"]) {
        if (!token.is_object() || !token.contains("id") || !token["id"].is_number_integer()) continue;
        const auto id = token["id"].get<int64_t>();
        if (id < 0 || static_cast<size_t>(id) >= spm.pieces.size() || id == unk_id) continue;
        auto& piece = spm.pieces[static_cast<size_t>(id)];
        if (token.contains("content") && token["content"].is_string() && token["content"] != piece.piece) continue;
        piece.type = token.value("special", false) ? PieceType::Control : PieceType::UserDefined;
      }
    }

    // Normalizer: Precompiled (the charsmap), Lowercase, and the whitespace clean-up SentencePiece does itself.
    spm.remove_extra_whitespaces = false;
    spm.add_dummy_prefix = false;
    bool lower = false;
    std::function<void(const nlohmann::json&)> visit_normalizer = [&](const nlohmann::json& n) {
      if (!n.is_object()) return;
      const std::string type = n.value("type", "");
      if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
        for (const auto& inner : n["normalizers"]) visit_normalizer(inner);
      } else if (type == "Precompiled") {
        if (n.contains("precompiled_charsmap") && n["precompiled_charsmap"].is_string())
          spm.precompiled_charsmap = base64_decode(n["precompiled_charsmap"].get<std::string>(), source);
      } else if (type == "Lowercase") {
        lower = true;
      } else if (type == "Strip" || type == "Replace") {
        spm.remove_extra_whitespaces = true;  // DebertaV2Converter's Strip + Replace(" {2,}", " ")
      }
    };
    if (root.contains("normalizer")) visit_normalizer(root["normalizer"]);

    // Pre-tokenizer: Metaspace decides the "▁" prefix.
    bool has_metaspace = false;
    std::function<void(const nlohmann::json&)> visit_pre = [&](const nlohmann::json& p) {
      if (!p.is_object()) return;
      const std::string type = p.value("type", "");
      if (type == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array()) {
        for (const auto& inner : p["pretokenizers"]) visit_pre(inner);
      } else if (type == "Metaspace") {
        has_metaspace = true;
        const std::string replacement = p.value("replacement", std::string(kSpaceSymbol));
        if (replacement != kSpaceSymbol)
          fail("{}: Metaspace replacement \"{}\" is not supported (only \"\u2581\")", source, replacement);
        if (p.contains("prepend_scheme") && p["prepend_scheme"].is_string())
          spm.add_dummy_prefix = p["prepend_scheme"] != "never";
        else
          spm.add_dummy_prefix = p.value("add_prefix_space", true);
      } else if (type == "Punctuation" || type == "Split" || type == "ByteLevel" || type == "Whitespace") {
        fail("{}: pre_tokenizer {} is not supported with a Unigram model (only Metaspace)", source, type);
      }
    };
    if (root.contains("pre_tokenizer")) visit_pre(root["pre_tokenizer"]);
    spm.escape_whitespaces = has_metaspace;
    if (lowercase) *lowercase = lower;
    return UnigramModel(std::move(spm), source);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: unexpected tokenizer.json content ({})", source, e.what());
  }
}

}  // namespace guardkit::text
