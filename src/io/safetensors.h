// safetensors checkpoints: memory-mapped reading with zero-copy tensor views, sharded checkpoints, writing.
// Torch-free: models/weights.h turns a TensorView into an at::Tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace guardkit::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);               // "F32", ...
size_t dtype_size(DType dtype);                    // bytes per element
DType parse_dtype(const std::string& name);         // throws guardkit::Error on unknown names

// A tensor inside a mapped file. `data` stays valid while the owning SafetensorsFile lives.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;

  // The elements in place (zero-copy). Throws unless the dtype is T's and the data is aligned for T
  // (files written by HF or write_safetensors always are); to_float32 below converts any dtype instead.
  template <typename T>
  std::span<const T> values() const;
};

// BOOL and U8 share uint8_t; F16 and BF16 have no C++ type here: read them as uint16_t bits.
template <typename T>
constexpr bool dtype_holds(DType dtype) {
  if constexpr (std::is_same_v<T, double>) return dtype == DType::F64;
  else if constexpr (std::is_same_v<T, float>) return dtype == DType::F32;
  else if constexpr (std::is_same_v<T, uint16_t>) return dtype == DType::F16 || dtype == DType::BF16;
  else if constexpr (std::is_same_v<T, int64_t>) return dtype == DType::I64;
  else if constexpr (std::is_same_v<T, int32_t>) return dtype == DType::I32;
  else if constexpr (std::is_same_v<T, int16_t>) return dtype == DType::I16;
  else if constexpr (std::is_same_v<T, int8_t>) return dtype == DType::I8;
  else if constexpr (std::is_same_v<T, uint8_t>) return dtype == DType::U8 || dtype == DType::BOOL;
  else return false;
}

template <typename T>
constexpr const char* element_type_name() {
  if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, uint16_t>) return "uint16_t";
  else if constexpr (std::is_same_v<T, int64_t>) return "int64_t";
  else if constexpr (std::is_same_v<T, int32_t>) return "int32_t";
  else if constexpr (std::is_same_v<T, int16_t>) return "int16_t";
  else if constexpr (std::is_same_v<T, int8_t>) return "int8_t";
  else if constexpr (std::is_same_v<T, uint8_t>) return "uint8_t";
  else return "unsupported type";
}

[[noreturn]] void fail_view_type(const TensorView& view, const char* wanted, bool misaligned);

template <typename T>
std::span<const T> TensorView::values() const {
  if (!dtype_holds<T>(dtype)) fail_view_type(*this, element_type_name<T>(), false);
  if (reinterpret_cast<uintptr_t>(data) % alignof(T) != 0) fail_view_type(*this, element_type_name<T>(), true);
  return {reinterpret_cast<const T*>(data), nbytes / sizeof(T)};
}

// Half-precision conversions (bit patterns as uint16_t) and a converting copy of any view to float32.
float f16_to_f32(uint16_t bits);
float bf16_to_f32(uint16_t bits);
uint16_t f32_to_bf16(float value);  // round to nearest even
std::vector<float> to_float32(const TensorView& view);

// One .safetensors file, mmapped read-only.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // in file order (by offset)
  const TensorView* find(const std::string& name) const;               // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
  friend struct SafetensorsParser;
};

// Parses a safetensors image already in memory (used by open() and by the fuzz tests). Views point into `bytes`.
// Throws guardkit::Error with `origin` (a file name) in the message on any malformation.
std::vector<TensorView> parse_safetensors(const std::byte* bytes, size_t size, const std::string& origin,
                                          std::map<std::string, std::string>* metadata = nullptr);

// A model's checkpoint: a directory with model.safetensors, or sharded through model.safetensors.index.json,
// or a single .safetensors file path.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir_or_file);
  const TensorView* find(const std::string& name) const;   // nullptr when absent
  const TensorView& get(const std::string& name) const;    // throws naming the tensor and the checkpoint
  std::vector<std::string> names() const;                  // sorted
  const std::filesystem::path& location() const { return location_; }

 private:
  std::filesystem::path location_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
};

// A tensor to write: bytes owned by the caller (must stay alive during the call).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file Hugging Face loads (header padded to 8 bytes, tensors sorted by name, metadata
// {"format":"pt"} unless given). Writes to a temporary file and renames it, so a crash never leaves a torn file.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace guardkit::io
