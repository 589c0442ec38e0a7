// A SentencePiece model (the ModelProto of an `spm.model` / `tokenizer.model` file), read from the protobuf wire
// format by hand: Debian's libsentencepiece cannot share a process with libtorch, and the few fields a tokenizer
// needs do not justify a schema compiler.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace guardkit::text {

// ModelProto.SentencePiece.Type; the numbers are the wire values.
enum class PieceType : int32_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct SpmPiece {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::Normal;
};

// TrainerSpec.ModelType.
enum class SpmModelType : int32_t { Unigram = 1, Bpe = 2, Word = 3, Char = 4 };

// The fields of a ModelProto that encoding and decoding depend on, with protobuf's defaults where absent.
struct SpmModel {
  std::vector<SpmPiece> pieces;

  // trainer_spec
  SpmModelType model_type = SpmModelType::Unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string unk_piece = "<unk>", bos_piece = "<s>", eos_piece = "</s>", pad_piece = "<pad>";
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ ", what decoding prints for an unknown piece

  // normalizer_spec
  std::string normalizer_name;
  std::string precompiled_charsmap;  // empty: no character normalisation (identity)
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;

  // Parses a serialized ModelProto. `source` names the file in error messages. Throws guardkit::Error on any
  // malformed input (truncated varints, lengths beyond the buffer, wrong wire types, bad enum values).
  static SpmModel parse(std::string_view bytes, const std::string& source);
  static SpmModel load(const std::filesystem::path& path);
};

}  // namespace guardkit::text
