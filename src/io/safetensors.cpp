#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/printable.h"

namespace guardkit::io {

using nlohmann::json;

namespace {
struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2},  {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2},  {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};
// A header above this is surely corrupt (HF's own limit is 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.name;
  return "?";
}

size_t dtype_size(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.size;
  return 0;
}

DType parse_dtype(const std::string& name) {
  for (const auto& info : kDTypes)
    if (name == info.name) return info.dtype;
  fail("unknown dtype '{}'", name);
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu, bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<float> to_float32(const TensorView& view) {
  const size_t n = static_cast<size_t>(view.numel());
  std::vector<float> out(n);
  auto load = [&](auto tag, auto convert) {
    using T = decltype(tag);
    for (size_t i = 0; i < n; ++i) {
      T value;
      std::memcpy(&value, view.data + i * sizeof(T), sizeof(T));  // memcpy: the data may be unaligned
      out[i] = convert(value);
    }
  };
  switch (view.dtype) {
    case DType::F64: load(double{}, [](double v) { return static_cast<float>(v); }); break;
    case DType::F32: load(float{}, [](float v) { return v; }); break;
    case DType::F16: load(uint16_t{}, f16_to_f32); break;
    case DType::BF16: load(uint16_t{}, bf16_to_f32); break;
    case DType::I64: load(int64_t{}, [](int64_t v) { return static_cast<float>(v); }); break;
    case DType::I32: load(int32_t{}, [](int32_t v) { return static_cast<float>(v); }); break;
    case DType::I16: load(int16_t{}, [](int16_t v) { return static_cast<float>(v); }); break;
    case DType::I8: load(int8_t{}, [](int8_t v) { return static_cast<float>(v); }); break;
    case DType::U8: load(uint8_t{}, [](uint8_t v) { return static_cast<float>(v); }); break;
    case DType::BOOL: load(uint8_t{}, [](uint8_t v) { return v ? 1.0f : 0.0f; }); break;
  }
  return out;
}

void fail_view_type(const TensorView& view, const char* wanted, bool misaligned) {
  if (misaligned) fail("tensor '{}': data is not aligned for in-place access; use to_float32", printable(view.name));
  fail("tensor '{}' has dtype {}, not the requested element type ({})", printable(view.name), dtype_name(view.dtype),
       wanted);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
std::vector<TensorView> parse_safetensors_unchecked(const std::byte* bytes, size_t size, const std::string& origin,
                                                    std::map<std::string, std::string>* metadata) {
  if (size < 8) fail("{}: truncated safetensors file ({} bytes, need at least 8 for the header length)", origin, size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes) fail("{}: header length {} is implausibly large", origin, header_len);
  if (header_len > size - 8)
    fail("{}: header length {} goes beyond the end of the file ({} bytes)", origin, header_len, size);
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON: {}", origin, printable(e.what()));
  }
  if (!header.is_object()) fail("{}: header must be a JSON object", origin);
  const std::byte* data = bytes + 8 + header_len;
  const size_t data_size = size - 8 - header_len;

  std::vector<TensorView> views;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("{}: __metadata__ must be an object of strings", origin);
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) fail("{}: __metadata__ value of '{}' is not a string", origin, m.key());
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) fail("{}: tensor '{}': entry is not an object", origin, name);
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) fail("{}: tensor '{}': missing dtype", origin, name);
    if (shape_it == entry.end() || !shape_it->is_array()) fail("{}: tensor '{}': missing shape", origin, name);
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2)
      fail("{}: tensor '{}': data_offsets must be [begin, end]", origin, name);
    TensorView view;
    view.name = name;
    try {
      view.dtype = parse_dtype(dtype_it->get<std::string>());
    } catch (const Error& e) {
      fail("{}: tensor '{}': {}", origin, name, e.what());
    }
    uint64_t numel = 1;
    for (const json& dim : *shape_it) {
      if (!dim.is_number_unsigned()) fail("{}: tensor '{}': shape entries must be non-negative integers", origin, name);
      uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d / 8)
        fail("{}: tensor '{}': shape is too large", origin, name);
      numel *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    const json& b = (*offsets_it)[0];
    const json& e = (*offsets_it)[1];
    if (!b.is_number_unsigned() || !e.is_number_unsigned())
      fail("{}: tensor '{}': data_offsets must be non-negative integers", origin, name);
    uint64_t begin = b.get<uint64_t>(), end = e.get<uint64_t>();
    if (begin > end || end > data_size)
      fail("{}: tensor '{}': data_offsets [{}, {}] lie outside the data section ({} bytes)", origin, name, begin, end,
           data_size);
    if (end - begin != numel * dtype_size(view.dtype))
      fail("{}: tensor '{}': {} bytes of data but shape and dtype {} need {}", origin, name, end - begin,
           dtype_name(view.dtype), numel * dtype_size(view.dtype));
    view.data = data + begin;
    view.nbytes = end - begin;
    views.push_back(std::move(view));
  }
  std::sort(views.begin(), views.end(), [](const TensorView& a, const TensorView& b) {
    return a.data != b.data ? a.data < b.data : a.nbytes < b.nbytes;
  });
  // Compare each tensor with the furthest-reaching one before it (empty tensors overlap nothing).
  const TensorView* reach = nullptr;
  for (const TensorView& view : views) {
    if (view.nbytes == 0) continue;
    if (reach && view.data < reach->data + reach->nbytes)
      fail("{}: tensors '{}' and '{}' overlap in the data section", origin, reach->name, view.name);
    if (!reach || view.data + view.nbytes > reach->data + reach->nbytes) reach = &view;
  }
  return views;
}
}  // namespace

std::vector<TensorView> parse_safetensors(const std::byte* bytes, size_t size, const std::string& origin,
                                          std::map<std::string, std::string>* metadata) {
  try {
    return parse_safetensors_unchecked(bytes, size, origin, metadata);
  } catch (const Error& e) {
    throw Error(printable(e.what(), 1000));  // tensor names come from the file: keep the message on one line
  }
}

struct SafetensorsParser {
  static void index(SafetensorsFile& file) {
    for (size_t i = 0; i < file.tensors_.size(); ++i) file.index_[file.tensors_[i].name] = i;
  }
};

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat: {}", path.string(), std::strerror(errno));
  }
  file->mapping_size_ = static_cast<size_t>(st.st_size);
  if (file->mapping_size_ > 0) {
    void* mapping = ::mmap(nullptr, file->mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      ::close(fd);
      fail("{}: mmap failed: {}", path.string(), std::strerror(errno));
    }
    file->mapping_ = mapping;
  }
  ::close(fd);
  file->tensors_ = parse_safetensors(static_cast<const std::byte*>(file->mapping_), file->mapping_size_,
                                     path.string(), &file->metadata_);
  SafetensorsParser::index(*file);
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Checkpoint Checkpoint::open(const std::filesystem::path& dir_or_file) {
  namespace fs = std::filesystem;
  Checkpoint checkpoint;
  checkpoint.location_ = dir_or_file;
  auto add_file = [&](const fs::path& path) {
    auto file = SafetensorsFile::open(path);
    for (const TensorView& view : file->tensors()) {
      if (checkpoint.by_name_.count(view.name))
        fail("{}: tensor '{}' appears in more than one shard", dir_or_file.string(), printable(view.name));
      checkpoint.by_name_[view.name] = &view;
    }
    checkpoint.files_.push_back(std::move(file));
  };
  if (fs::is_regular_file(dir_or_file)) {
    add_file(dir_or_file);
    return checkpoint;
  }
  if (!fs::is_directory(dir_or_file)) fail("{}: no such checkpoint file or directory", dir_or_file.string());
  const fs::path index_path = dir_or_file / "model.safetensors.index.json";
  const fs::path single_path = dir_or_file / "model.safetensors";
  if (fs::exists(index_path)) {
    json index;
    std::ifstream in(index_path, std::ios::binary);
    if (!in) fail("{}: cannot open", index_path.string());
    try {
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", index_path.string(), printable(e.what()));
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: missing the weight_map object", index_path.string());
    std::map<std::string, std::vector<std::string>> names_by_shard;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail("{}: weight_map entry '{}' is not a file name", index_path.string(), printable(it.key()));
      names_by_shard[it.value().get<std::string>()].push_back(it.key());
    }
    for (const auto& [shard, names] : names_by_shard) {
      if (shard.find("..") != std::string::npos || shard.find('/') != std::string::npos)
        fail("{}: shard name '{}' must be a plain file name", index_path.string(), printable(shard));
      if (!fs::is_regular_file(dir_or_file / shard))
        fail("{}: shard '{}' (which holds tensor '{}') does not exist", index_path.string(), printable(shard),
             printable(names.front()));
      add_file(dir_or_file / shard);
      const SafetensorsFile& added = *checkpoint.files_.back();
      for (const std::string& name : names)
        if (!added.find(name))
          fail("{}: tensor '{}' is listed for shard {} but not found in it", index_path.string(), printable(name),
               shard);
    }
  } else if (fs::exists(single_path)) {
    add_file(single_path);
  } else {
    fail("{}: no model.safetensors or model.safetensors.index.json", dir_or_file.string());
  }
  return checkpoint;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* view = find(name);
  if (!view) fail("{}: missing tensor '{}'", location_.string(), name);
  return *view;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  for (const auto& [name, view] : by_name_) names.push_back(name);
  return names;
}

namespace {
// Hugging Face's serializer orders tensors by descending element size, then by name: every tensor's offset is then a
// multiple of its element size, so readers can view the data in place.
bool write_order(const TensorToWrite* a, const TensorToWrite* b) {
  const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
  if (sa != sb) return sa > sb;
  return a->name < b->name;
}
}  // namespace

namespace {
std::string safetensors_header(const std::vector<const TensorToWrite*>& ordered,
                               const std::map<std::string, std::string>& metadata) {
  // Written by hand, not by nlohmann (which sorts keys), to match the bytes HF's serializer writes:
  // {"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...,"__metadata__":{..}} padded with spaces to 8 bytes.
  std::string text = "{";
  uint64_t offset = 0;
  for (const TensorToWrite* t : ordered) {
    if (text.size() > 1) text += ',';
    text += json(t->name).dump();
    text += fmt::format(R"(:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", dtype_name(t->dtype),
                        fmt::join(t->shape, ","), offset, offset + t->nbytes);
    offset += t->nbytes;
  }
  if (!metadata.empty()) {
    if (text.size() > 1) text += ',';
    text += R"("__metadata__":)";
    text += json(metadata).dump();
  }
  text += '}';
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  return text;
}
}  // namespace

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> ordered;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") fail("{}: '{}' cannot be a tensor name", path.string(), t.name);
    if (!seen.insert(t.name).second) fail("{}: tensor '{}' given twice", path.string(), t.name);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) fail("{}: tensor '{}' has a negative dimension", path.string(), t.name);
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.nbytes)
      fail("{}: tensor '{}' has {} bytes but its shape and dtype {} need {}", path.string(), t.name, t.nbytes,
           dtype_name(t.dtype), numel * dtype_size(t.dtype));
    if (t.nbytes > 0 && t.data == nullptr) fail("{}: tensor '{}' has no data", path.string(), t.name);
    ordered.push_back(&t);
  }
  std::sort(ordered.begin(), ordered.end(), write_order);
  const std::string header_text = safetensors_header(ordered, metadata);
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot write", tmp.string());
    const uint64_t len = header_text.size();  // little-endian on every platform we build for
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorToWrite* t : ordered)
      out.write(static_cast<const char*>(t->data), static_cast<std::streamsize>(t->nbytes));
    out.flush();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail("{}: write failed (disk full?)", tmp.string());
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("{}: cannot rename the written file into place: {}", path.string(), ec.message());
}

}  // namespace guardkit::io
