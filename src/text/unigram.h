// SentencePiece's Unigram segmentation (sentencepiece 0.1.97, the "optimized" Viterbi of unigram_model.cc and the
// post-processing of SentencePieceProcessor::Encode): best-scoring split of the normalised text into pieces, an
// unknown node (min score - 10) for characters no single piece covers, consecutive unknowns merged into one piece,
// byte fallback into <0xXX> pieces, user-defined pieces always preferred. Loads spm.model files or the Unigram model
// of a Hugging Face tokenizer.json.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/spm_model.h"
#include "text/spm_normalizer.h"

namespace guardkit::text {

class UnigramModel {
 public:
  // Validates the pieces as SentencePiece does (one unknown piece, no duplicates, byte pieces only with
  // byte_fallback and then all 256) and throws guardkit::Error naming `source` otherwise.
  UnigramModel(SpmModel model, const std::string& source);

  static UnigramModel load(const std::filesystem::path& spm_model_path);

  // The piece maps point into spec_.pieces: movable (the vector keeps its buffer), not copyable.
  UnigramModel(UnigramModel&&) = default;
  UnigramModel& operator=(UnigramModel&&) = default;
  UnigramModel(const UnigramModel&) = delete;
  UnigramModel& operator=(const UnigramModel&) = delete;

  // A tokenizer.json with a "Unigram" model, mapped onto the equivalent SentencePiece model: vocab and scores,
  // unk_id, byte_fallback, special added tokens as control pieces, non-special ones inside the vocab as user-defined
  // pieces, the Precompiled normalizer's charsmap, Metaspace's prefix space. `lowercase` (if given) is set when the
  // normalizer lowercases.
  static UnigramModel from_tokenizer_json(const std::filesystem::path& path, bool* lowercase = nullptr);

  // SentencePieceProcessor::Encode(text) as ids / as pieces (unknown runs as one piece of their own text).
  std::vector<int32_t> encode(std::string_view text) const;
  void encode(std::string_view text, std::vector<int32_t>& ids, std::vector<std::string>* pieces) const;
  std::vector<std::string> encode_as_pieces(std::string_view text) const;

  // SentencePieceProcessor::DecodeIds / DecodePieces.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode_pieces(const std::vector<std::string>& pieces) const;

  std::string normalize(std::string_view text) const { return normalizer_.normalize(text); }

  // SentencePiece's PieceToId: control/unknown/byte pieces first, then the others; the unknown id when absent.
  int32_t piece_to_id(std::string_view piece) const;
  std::optional<int32_t> find_piece(std::string_view piece) const;
  const std::string& id_to_piece(int32_t id) const { return spec_.pieces.at(static_cast<size_t>(id)).piece; }
  size_t size() const { return spec_.pieces.size(); }
  int32_t unk_id() const { return unk_id_; }
  PieceType type(int32_t id) const { return spec_.pieces[static_cast<size_t>(id)].type; }
  bool is_control(int32_t id) const { return valid(id) && type(id) == PieceType::Control; }
  bool is_unknown(int32_t id) const { return valid(id) && type(id) == PieceType::Unknown; }
  bool is_byte(int32_t id) const { return valid(id) && type(id) == PieceType::Byte; }
  bool valid(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < spec_.pieces.size(); }
  const SpmModel& spec() const { return spec_; }

 private:
  struct Segment {
    uint32_t begin, end;  // byte range in the normalised text
    int32_t id;
  };
  // Viterbi over the normalised text (sentencepiece's EncodeOptimized).
  void viterbi(std::string_view normalized, std::vector<Segment>& path) const;

  // Byte trie of the segmentable pieces (normal, user-defined, unused): children in an open-addressing table keyed
  // by (node << 8 | byte), piece id per node (-1 when no piece ends there).
  int32_t child(int32_t node, uint8_t byte) const;
  void build_trie();

  SpmModel spec_;
  SpmNormalizer normalizer_;
  int32_t unk_id_ = -1;
  float min_score_ = 0, max_score_ = 0;
  std::vector<int32_t> node_piece_;  // -1 also for unused pieces, which segmentation skips
  std::vector<double> node_score_;   // the piece's score as the Viterbi adds it (user-defined: length * max - 0.1)
  std::vector<uint64_t> table_keys_;  // 0 = empty slot (key + 1 stored)
  std::vector<int32_t> table_children_;
  uint64_t table_mask_ = 0;
  std::unordered_map<std::string_view, int32_t> reserved_;  // control, unknown, byte pieces
  std::unordered_map<std::string_view, int32_t> normal_;    // normal, user-defined, unused pieces
  int32_t byte_ids_[256] = {};
};

}  // namespace guardkit::text
