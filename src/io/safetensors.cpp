#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "util/error.h"

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

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<TensorView> parse_safetensors(const std::byte* bytes, size_t size, const std::string& origin,
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
    fail("{}: header is not valid JSON: {}", origin, e.what());
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
  std::sort(views.begin(), views.end(), [](const TensorView& a, const TensorView& b) { return a.data < b.data; });
  for (size_t i = 1; i < views.size(); ++i) {
    const TensorView& prev = views[i - 1];
    if (prev.nbytes > 0 && views[i].nbytes > 0 && views[i].data < prev.data + prev.nbytes)
      fail("{}: tensors '{}' and '{}' overlap in the data section", origin, prev.name, views[i].name);
  }
  return views;
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
        fail("{}: tensor '{}' appears in more than one shard", dir_or_file.string(), view.name);
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
    try {
      std::ifstream in(index_path);
      index = json::parse(in);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", index_path.string(), e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail("{}: missing the weight_map object", index_path.string());
    std::map<std::string, std::vector<std::string>> names_by_shard;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail("{}: weight_map entry '{}' is not a file name", index_path.string(), it.key());
      names_by_shard[it.value().get<std::string>()].push_back(it.key());
    }
    for (const auto& [shard, names] : names_by_shard) {
      if (shard.find("..") != std::string::npos || shard.find('/') != std::string::npos)
        fail("{}: shard name '{}' must be a plain file name", index_path.string(), shard);
      add_file(dir_or_file / shard);
      for (const std::string& name : names)
        if (!checkpoint.by_name_.count(name))
          fail("{}: tensor '{}' is listed for shard {} but not found in it", index_path.string(), name, shard);
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

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite* t : sorted) {
    int64_t numel = 1;
    for (int64_t d : t->shape) numel *= d;
    if (static_cast<size_t>(numel) * dtype_size(t->dtype) != t->nbytes)
      fail("{}: tensor '{}' has {} bytes but its shape and dtype need {}", path.string(), t->name, t->nbytes,
           numel * dtype_size(t->dtype));
    if (header.contains(t->name)) fail("{}: tensor '{}' given twice", path.string(), t->name);
    header[t->name] = {{"dtype", dtype_name(t->dtype)}, {"shape", t->shape}, {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  std::string header_text = header.dump();
  while ((8 + header_text.size()) % 8 != 0) header_text.push_back(' ');  // HF pads with spaces to 8-byte alignment
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("{}: cannot write", tmp.string());
    uint64_t len = header_text.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorToWrite* t : sorted) out.write(static_cast<const char*>(t->data), static_cast<std::streamsize>(t->nbytes));
    out.flush();
    if (!out) fail("{}: write failed (disk full?)", tmp.string());
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace guardkit::io
