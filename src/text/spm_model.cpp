// Reads a SentencePiece ModelProto from the protobuf wire format: (field number << 3 | wire type) tags, varints,
// length-delimited submessages and strings, fixed32 floats. Unknown fields are skipped as protobuf does.
#include "text/spm_model.h"

#include <cstring>

#include "util/error.h"
#include "util/paths.h"

namespace guardkit::text {
namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5 };

// A cursor over one (sub)message; every read is bounds-checked and errors name the file and the message.
class WireReader {
 public:
  WireReader(std::string_view data, const std::string& source, const char* message)
      : data_(data), source_(source), message_(message) {}

  bool done() const { return pos_ >= data_.size(); }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) error("truncated varint");
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    error("varint longer than 10 bytes");
  }

  // Returns {field number, wire type}.
  std::pair<uint32_t, uint32_t> tag() {
    const uint64_t key = varint();
    const uint64_t field = key >> 3;
    if (field == 0 || field > 0x1FFFFFFF) error(fmt::format("invalid field number {}", field));
    return {static_cast<uint32_t>(field), static_cast<uint32_t>(key & 7)};
  }

  std::string_view bytes() {
    const uint64_t length = varint();
    if (length > data_.size() - pos_)
      error(fmt::format("length {} runs past the end of the data ({} bytes left)", length, data_.size() - pos_));
    std::string_view out = data_.substr(pos_, length);
    pos_ += length;
    return out;
  }

  float fixed32_float() {
    if (data_.size() - pos_ < 4) error("truncated fixed32");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += 4;
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }

  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint: varint(); return;
      case kFixed64:
        if (data_.size() - pos_ < 8) error("truncated fixed64");
        pos_ += 8;
        return;
      case kLengthDelimited: bytes(); return;
      case kFixed32:
        if (data_.size() - pos_ < 4) error("truncated fixed32");
        pos_ += 4;
        return;
      default: error(fmt::format("unsupported wire type {}", wire_type));
    }
  }

  void expect(uint32_t wire_type, uint32_t wanted, const char* field) {
    if (wire_type != wanted) error(fmt::format("field {} has wire type {}, expected {}", field, wire_type, wanted));
  }

  bool boolean(uint32_t wire_type, const char* field) {
    expect(wire_type, kVarint, field);
    return varint() != 0;
  }

  int32_t int32(uint32_t wire_type, const char* field) {
    expect(wire_type, kVarint, field);
    return static_cast<int32_t>(static_cast<uint64_t>(varint()));  // protobuf int32: low 32 bits, sign-extended
  }

  std::string string(uint32_t wire_type, const char* field) {
    expect(wire_type, kLengthDelimited, field);
    return std::string(bytes());
  }

  [[noreturn]] void error(const std::string& what) const {
    fail("{}: malformed SentencePiece model ({} at byte {} of {}: {})", source_, message_, pos_, data_.size(), what);
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
  const std::string& source_;
  const char* message_;
};

SpmPiece parse_piece(std::string_view data, const std::string& source, size_t index) {
  WireReader reader(data, source, "ModelProto.pieces");
  SpmPiece piece;
  bool has_piece = false;
  while (!reader.done()) {
    auto [field, wire] = reader.tag();
    switch (field) {
      case 1: piece.piece = reader.string(wire, "piece"); has_piece = true; break;
      case 2:
        reader.expect(wire, kFixed32, "score");
        piece.score = reader.fixed32_float();
        break;
      case 3: {
        const int32_t type = reader.int32(wire, "type");
        if (type < 1 || type > 6) reader.error(fmt::format("piece {} has unknown type {}", index, type));
        piece.type = static_cast<PieceType>(type);
        break;
      }
      default: reader.skip(wire);
    }
  }
  if (!has_piece || piece.piece.empty()) reader.error(fmt::format("piece {} is empty", index));
  return piece;
}

void parse_trainer_spec(std::string_view data, const std::string& source, SpmModel& model) {
  WireReader reader(data, source, "TrainerSpec");
  while (!reader.done()) {
    auto [field, wire] = reader.tag();
    switch (field) {
      case 3: {
        const int32_t type = reader.int32(wire, "model_type");
        if (type < 1 || type > 4) reader.error(fmt::format("unknown model_type {}", type));
        model.model_type = static_cast<SpmModelType>(type);
        break;
      }
      case 24: model.treat_whitespace_as_suffix = reader.boolean(wire, "treat_whitespace_as_suffix"); break;
      case 35: model.byte_fallback = reader.boolean(wire, "byte_fallback"); break;
      case 40: model.unk_id = reader.int32(wire, "unk_id"); break;
      case 41: model.bos_id = reader.int32(wire, "bos_id"); break;
      case 42: model.eos_id = reader.int32(wire, "eos_id"); break;
      case 43: model.pad_id = reader.int32(wire, "pad_id"); break;
      case 44: model.unk_surface = reader.string(wire, "unk_surface"); break;
      case 45: model.unk_piece = reader.string(wire, "unk_piece"); break;
      case 46: model.bos_piece = reader.string(wire, "bos_piece"); break;
      case 47: model.eos_piece = reader.string(wire, "eos_piece"); break;
      case 48: model.pad_piece = reader.string(wire, "pad_piece"); break;
      default: reader.skip(wire);
    }
  }
}

void parse_normalizer_spec(std::string_view data, const std::string& source, SpmModel& model) {
  WireReader reader(data, source, "NormalizerSpec");
  while (!reader.done()) {
    auto [field, wire] = reader.tag();
    switch (field) {
      case 1: model.normalizer_name = reader.string(wire, "name"); break;
      case 2: model.precompiled_charsmap = reader.string(wire, "precompiled_charsmap"); break;
      case 3: model.add_dummy_prefix = reader.boolean(wire, "add_dummy_prefix"); break;
      case 4: model.remove_extra_whitespaces = reader.boolean(wire, "remove_extra_whitespaces"); break;
      case 5: model.escape_whitespaces = reader.boolean(wire, "escape_whitespaces"); break;
      default: reader.skip(wire);
    }
  }
}

}  // namespace

SpmModel SpmModel::parse(std::string_view bytes, const std::string& source) {
  SpmModel model;
  WireReader reader(bytes, source, "ModelProto");
  while (!reader.done()) {
    auto [field, wire] = reader.tag();
    switch (field) {
      case 1:
        reader.expect(wire, kLengthDelimited, "pieces");
        model.pieces.push_back(parse_piece(reader.bytes(), source, model.pieces.size()));
        break;
      case 2:
        reader.expect(wire, kLengthDelimited, "trainer_spec");
        parse_trainer_spec(reader.bytes(), source, model);
        break;
      case 3:
        reader.expect(wire, kLengthDelimited, "normalizer_spec");
        parse_normalizer_spec(reader.bytes(), source, model);
        break;
      default: reader.skip(wire);  // self_test_data, denormalizer_spec, extensions
    }
  }
  if (model.pieces.empty()) fail("{}: malformed SentencePiece model (no pieces)", source);
  return model;
}

SpmModel SpmModel::load(const std::filesystem::path& path) { return parse(read_file(path), path.string()); }

}  // namespace guardkit::text
