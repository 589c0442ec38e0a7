// safetensors reading and writing: round trips in every dtype, byte-identical rewrites of Hugging Face files,
// sharded checkpoints, one clear error per kind of malformed file, and a seeded fuzz run of the header parser.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "io/safetensors.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;
namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A raw safetensors image from a header text and a data section (for hand-made malformed files).
std::string image(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t len = header.size();
  std::memcpy(out.data(), &len, 8);
  return out + header + data;
}

// Expects parsing `bytes` (written to a file named `file_name`) to fail with a one-line message containing every
// string of `expected`, and returns the message.
std::string expect_open_error(const std::string& bytes, const std::string& file_name,
                              const std::vector<std::string>& expected) {
  const fs::path dir = test::temp_dir("st_err");
  const fs::path path = dir / file_name;
  write_bytes(path, bytes);
  try {
    io::SafetensorsFile::open(path);
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path.string()), std::string::npos) << "message must name the file: " << message;
    for (const auto& s : expected) EXPECT_NE(message.find(s), std::string::npos) << "missing '" << s << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << "message must be one line: " << message;
    return message;
  }
  ADD_FAILURE() << "no error for " << file_name;
  return {};
}

struct OwnedTensor {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<io::TensorToWrite> to_write(const std::vector<OwnedTensor>& tensors) {
  std::vector<io::TensorToWrite> out;
  for (const auto& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  return out;
}

// One tensor per dtype with odd sizes, so a careless writer would misalign the larger types after the smaller.
std::vector<OwnedTensor> sample_tensors(uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<OwnedTensor> tensors;
  auto add = [&](std::string name, io::DType dtype, std::vector<int64_t> shape) {
    int64_t numel = 1;
    for (auto d : shape) numel *= d;
    OwnedTensor t{std::move(name), dtype, std::move(shape), std::vector<uint8_t>(numel * io::dtype_size(dtype))};
    for (auto& b : t.bytes) b = static_cast<uint8_t>(rng());
    if (dtype == io::DType::BOOL)
      for (auto& b : t.bytes) b &= 1;
    tensors.push_back(std::move(t));
  };
  add("a.bool_mask", io::DType::BOOL, {3});
  add("b.u8", io::DType::U8, {5});
  add("c.i8", io::DType::I8, {1, 3});
  add("d.f16", io::DType::F16, {3});
  add("e.bf16", io::DType::BF16, {2, 3});
  add("f.i32", io::DType::I32, {3});
  add("g.f32", io::DType::F32, {7, 1});
  add("h.i64", io::DType::I64, {2});
  add("i.f64", io::DType::F64, {1});
  add("j.i16", io::DType::I16, {3});
  add("k.scalar", io::DType::F32, {});
  add("l.empty", io::DType::F32, {0, 4});
  return tensors;
}

}  // namespace

TEST(Safetensors, RoundTripsEveryDtypeAligned) {
  const fs::path dir = test::temp_dir("st_roundtrip");
  const auto tensors = sample_tensors(1);
  io::write_safetensors(dir / "t.safetensors", to_write(tensors));
  auto file = io::SafetensorsFile::open(dir / "t.safetensors");
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_EQ(file->tensors().size(), tensors.size());
  const std::string raw = read_bytes(dir / "t.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ((8 + header_len) % 8, 0u);
  for (const auto& t : tensors) {
    const io::TensorView* view = file->find(t.name);
    ASSERT_NE(view, nullptr) << t.name;
    EXPECT_EQ(view->dtype, t.dtype) << t.name;
    EXPECT_EQ(view->shape, t.shape) << t.name;
    ASSERT_EQ(view->nbytes, t.bytes.size()) << t.name;
    if (!t.bytes.empty()) EXPECT_EQ(std::memcmp(view->data, t.bytes.data(), t.bytes.size()), 0) << t.name;
    // Aligned for in-place access: mmap is page aligned, so the address tells the file offset's alignment.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(view->data) % io::dtype_size(t.dtype), 0u) << t.name;
  }
  // Zero-copy typed views point into the mapping.
  const io::TensorView* f32 = file->find("g.f32");
  auto values = f32->values<float>();
  EXPECT_EQ(values.size(), 7u);
  EXPECT_EQ(static_cast<const void*>(values.data()), static_cast<const void*>(f32->data));
  EXPECT_THROW(f32->values<double>(), Error);
  EXPECT_EQ(file->find("k.scalar")->numel(), 1);
  EXPECT_EQ(file->find("l.empty")->numel(), 0);
  EXPECT_EQ(file->find("nope"), nullptr);
}

TEST(Safetensors, WriterOrdersLikeHuggingFace) {
  // Larger element types first, then by name; metadata last; header padded with spaces.
  const fs::path dir = test::temp_dir("st_order");
  const auto tensors = sample_tensors(2);
  io::write_safetensors(dir / "t.safetensors", to_write(tensors));
  auto file = io::SafetensorsFile::open(dir / "t.safetensors");
  size_t previous_size = 8;
  std::string previous_name;
  for (const auto& view : file->tensors()) {
    if (view.nbytes == 0) continue;
    const size_t size = io::dtype_size(view.dtype);
    EXPECT_LE(size, previous_size) << view.name;
    if (size == previous_size) EXPECT_LT(previous_name, view.name);
    previous_size = size;
    previous_name = view.name;
  }
  const std::string raw = read_bytes(dir / "t.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, raw.data(), 8);
  const std::string header = raw.substr(8, header_len);
  EXPECT_EQ(header.substr(0, 2), "{\"");
  const std::string tail = R"(,"__metadata__":{"format":"pt"}})";
  const std::string trimmed = header.substr(0, header.find_last_not_of(' ') + 1);
  EXPECT_EQ(trimmed.substr(trimmed.size() - tail.size()), tail);
  EXPECT_EQ(header.size() - trimmed.size(), (8 - (8 + trimmed.size()) % 8) % 8);  // spaces only to reach 8 bytes
}

TEST(Safetensors, RewritingHuggingFaceFilesIsByteIdentical) {
  // The fixtures were written by Hugging Face's save_pretrained: writing their tensors back must give the same bytes.
  for (const char* name : {"deberta/model.safetensors", "llama/model.safetensors"}) {
    const fs::path source = test::fixture(name);
    auto file = io::SafetensorsFile::open(source);
    std::vector<io::TensorToWrite> out;
    for (const auto& v : file->tensors()) out.push_back({v.name, v.dtype, v.shape, v.data, v.nbytes});
    const fs::path dir = test::temp_dir("st_rewrite");
    io::write_safetensors(dir / "copy.safetensors", out, file->metadata());
    EXPECT_TRUE(read_bytes(source) == read_bytes(dir / "copy.safetensors")) << name;
  }
}

TEST(Safetensors, HalfPrecisionConversions) {
  EXPECT_EQ(io::f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(io::f16_to_f32(0xC000), -2.0f);
  EXPECT_EQ(io::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(io::f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(io::f16_to_f32(0x0200), std::ldexp(1.0f, -15));  // a larger subnormal
  EXPECT_TRUE(std::isinf(io::f16_to_f32(0x7C00)));
  EXPECT_TRUE(std::isnan(io::f16_to_f32(0x7E00)));
  EXPECT_EQ(io::bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(io::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(io::f32_to_bf16(1.00390625f), 0x3F80);       // exactly halfway: rounds to even (down)
  EXPECT_EQ(io::f32_to_bf16(1.01171875f), 0x3F82);       // halfway between 0x3F81 and 0x3F82: to even (up)
  EXPECT_TRUE(std::isnan(io::bf16_to_f32(io::f32_to_bf16(std::nanf("")))));

  // to_float32 reads every dtype through the same path.
  const fs::path dir = test::temp_dir("st_convert");
  const uint16_t halfs[] = {0x3C00, 0xC000};
  const uint16_t bhalfs[] = {0x3F80, 0xC040};
  const int64_t longs[] = {-3, 1LL << 40};
  const uint8_t bools[] = {1, 0};
  io::write_safetensors(dir / "c.safetensors", {{"h", io::DType::F16, {2}, halfs, 4},
                                                {"b", io::DType::BF16, {2}, bhalfs, 4},
                                                {"l", io::DType::I64, {2}, longs, 16},
                                                {"m", io::DType::BOOL, {2}, bools, 2}});
  auto file = io::SafetensorsFile::open(dir / "c.safetensors");
  EXPECT_EQ(io::to_float32(*file->find("h")), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(io::to_float32(*file->find("b")), (std::vector<float>{1.0f, -3.0f}));
  EXPECT_EQ(io::to_float32(*file->find("l")), (std::vector<float>{-3.0f, 1099511627776.0f}));
  EXPECT_EQ(io::to_float32(*file->find("m")), (std::vector<float>{1.0f, 0.0f}));
}

TEST(Safetensors, ShardedCheckpointThroughIndex) {
  const fs::path dir = test::temp_dir("st_sharded");
  const auto tensors = sample_tensors(3);
  std::vector<OwnedTensor> first(tensors.begin(), tensors.begin() + 5), second(tensors.begin() + 5, tensors.end());
  io::write_safetensors(dir / "model-00001-of-00002.safetensors", to_write(first));
  io::write_safetensors(dir / "model-00002-of-00002.safetensors", to_write(second));
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& t : first) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : second) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  write_bytes(dir / "model.safetensors.index.json", index.dump(2));

  auto checkpoint = io::Checkpoint::open(dir);
  std::vector<std::string> expected_names;
  for (const auto& t : tensors) expected_names.push_back(t.name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(checkpoint.names(), expected_names);
  for (const auto& t : tensors) {
    const io::TensorView& view = checkpoint.get(t.name);
    EXPECT_EQ(view.shape, t.shape);
    if (!t.bytes.empty()) EXPECT_EQ(std::memcmp(view.data, t.bytes.data(), t.bytes.size()), 0) << t.name;
  }
  // Copies of a Checkpoint share the mappings; views stay valid after the original is gone.
  io::Checkpoint copy = [&] { return io::Checkpoint::open(dir); }();
  EXPECT_EQ(copy.get("g.f32").nbytes, 28u);

  // A single-file directory and a file path both open too.
  const fs::path single = test::temp_dir("st_single");
  io::write_safetensors(single / "model.safetensors", to_write(first));
  EXPECT_EQ(io::Checkpoint::open(single).names().size(), first.size());
  EXPECT_EQ(io::Checkpoint::open(single / "model.safetensors").names().size(), first.size());
}

namespace {
// Writes a two-shard checkpoint whose index is `index` and expects opening it to fail naming `expected`.
void expect_index_error(const nlohmann::json& index, const std::vector<std::string>& expected, bool duplicate = false) {
  const fs::path dir = test::temp_dir("st_index");
  const float values[] = {1, 2};
  io::write_safetensors(dir / "s1.safetensors", {{"x", io::DType::F32, {2}, values, 8}});
  io::write_safetensors(dir / "s2.safetensors", {{duplicate ? "x" : "y", io::DType::F32, {2}, values, 8}});
  write_bytes(dir / "model.safetensors.index.json", index.is_string() ? index.get<std::string>() : index.dump());
  try {
    io::Checkpoint::open(dir);
    ADD_FAILURE() << "no error for index " << index.dump();
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& s : expected) EXPECT_NE(message.find(s), std::string::npos) << "missing '" << s << "' in: " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}
}  // namespace

TEST(Safetensors, IndexErrorsNameIndexAndTensor) {
  expect_index_error({{"weight_map", {{"x", "s1.safetensors"}, {"z", "s2.safetensors"}}}},
                     {"model.safetensors.index.json", "'z'", "s2.safetensors"});
  expect_index_error({{"weight_map", {{"x", "s1.safetensors"}, {"y", "s3.safetensors"}}}},
                     {"model.safetensors.index.json", "s3.safetensors", "'y'", "does not exist"});
  expect_index_error({{"weight_map", {{"x", "s1.safetensors"}, {"y", "../s2.safetensors"}}}}, {"plain file name"});
  expect_index_error({{"weight_map", {{"x", 3}}}}, {"'x'", "not a file name"});
  expect_index_error({{"weights", {}}}, {"weight_map"});
  expect_index_error(std::string("{\"weight_map\": {"), {"model.safetensors.index.json", "not valid JSON"});
  expect_index_error({{"weight_map", {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}}}, {"'x'", "more than one shard"},
                     /*duplicate=*/true);
}

TEST(Safetensors, MissingCheckpointIsAnError) {
  const fs::path dir = test::temp_dir("st_missing");
  EXPECT_THROW(io::Checkpoint::open(dir), Error);
  EXPECT_THROW(io::Checkpoint::open(dir / "nope"), Error);
  EXPECT_THROW(io::SafetensorsFile::open(dir / "nope.safetensors"), Error);
}

TEST(Safetensors, MalformedFilesGiveOneLineErrors) {
  const std::string good_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8(8, '\x01');
  // Truncated before the header length is complete.
  expect_open_error(std::string("\x10\x00\x00", 3), "short.safetensors", {"truncated"});
  expect_open_error("", "empty.safetensors", {"truncated"});
  // Header length beyond the end of the file.
  {
    std::string bytes = image("{" + good_entry + "}", data8);
    bytes[0] = static_cast<char>(0xff);
    expect_open_error(bytes, "longheader.safetensors", {"header length", "beyond the end"});
    std::string huge(8, '\xff');
    expect_open_error(huge + "{}", "hugeheader.safetensors", {"header length"});
  }
  expect_open_error(image("{" + good_entry, data8), "badjson.safetensors", {"not valid JSON"});
  expect_open_error(image("[1,2]", ""), "array.safetensors", {"JSON object"});
  // A file cut off in its data section: the offsets then lie outside it.
  expect_open_error(image("{" + good_entry + "}", data8.substr(0, 5)), "cut.safetensors",
                    {"'w'", "outside the data section"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data8), "reversed.safetensors",
                    {"'w'", "outside"});
  expect_open_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          data8),
                    "overlap.safetensors", {"'a'", "'b'", "overlap"});
  // An empty tensor between two overlapping ones must not hide the overlap.
  expect_open_error(image(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                          R"("e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
                          R"("c":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})",
                          data8),
                    "overlap2.safetensors", {"'a'", "'c'", "overlap"});
  expect_open_error(image(R"({"w":{"dtype":"F8_E9M9","shape":[2],"data_offsets":[0,8]}})", data8), "dtype.safetensors",
                    {"'w'", "unknown dtype", "F8_E9M9"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8), "size.safetensors",
                    {"'w'", "8 bytes", "need 12"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8), "neg.safetensors",
                    {"'w'", "non-negative"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,8],"data_offsets":[0,8]}})", data8),
                    "overflow.safetensors", {"'w'", "too large"});
  expect_open_error(image(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", data8), "nodtype.safetensors", {"'w'", "dtype"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", data8), "offsets.safetensors",
                    {"'w'", "data_offsets"});
  expect_open_error(image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}})", data8), "float.safetensors",
                    {"'w'", "data_offsets"});
  expect_open_error(image(R"({"w":[1]})", data8), "entry.safetensors", {"'w'", "not an object"});
  expect_open_error(image(R"({"__metadata__":{"format":3}})", ""), "meta.safetensors", {"__metadata__", "format"});
  // Tensor names come from the file: a newline in one must not break the message onto two lines.
  expect_open_error(image(R"({"evil\nname":{"dtype":"Q","shape":[2],"data_offsets":[0,8]}})", data8),
                    "newline.safetensors", {"evil\\nname"});
}

TEST(Safetensors, WriterRejectsInconsistentTensors) {
  const fs::path dir = test::temp_dir("st_write_err");
  const float values[] = {1, 2, 3};
  EXPECT_THROW(io::write_safetensors(dir / "a.safetensors", {{"w", io::DType::F32, {2}, values, 12}}), Error);
  EXPECT_THROW(io::write_safetensors(dir / "b.safetensors",
                                     {{"w", io::DType::F32, {3}, values, 12}, {"w", io::DType::F32, {3}, values, 12}}),
               Error);
  EXPECT_THROW(io::write_safetensors(dir / "c.safetensors", {{"__metadata__", io::DType::F32, {3}, values, 12}}), Error);
  EXPECT_THROW(io::write_safetensors(dir / "d.safetensors", {{"w", io::DType::F32, {-3}, values, 12}}), Error);
  EXPECT_FALSE(fs::exists(dir / "a.safetensors"));
  EXPECT_THROW(io::write_safetensors(dir / "no_such_dir" / "e.safetensors", {{"w", io::DType::F32, {3}, values, 12}}),
               Error);
}

// Mutates a valid file thousands of times (seeded) and checks the parser only ever throws guardkit::Error, and that
// whatever it accepts stays inside the buffer. Under ASan any out-of-bounds read fails the run.
TEST(Safetensors, FuzzHeaderParser) {
  const fs::path dir = test::temp_dir("st_fuzz");
  const auto tensors = sample_tensors(4);
  io::write_safetensors(dir / "seed.safetensors", to_write(tensors));
  const std::string seed = read_bytes(dir / "seed.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, seed.data(), 8);

  std::mt19937 rng(20261128);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  const std::vector<std::string> tokens = {"-1", "1e400", "18446744073709551615", "[]", "{}", "\"\\u0000\"", "null",
                                           "\"F32\"", "\"BOOL\"", ",", ":", "[0,0]", "\"__metadata__\"", "9999999"};
  int accepted = 0, rejected = 0;
  for (int iteration = 0; iteration < 4000; ++iteration) {
    std::string bytes = seed;
    const int mutations = 1 + static_cast<int>(pick(4));
    for (int m = 0; m < mutations; ++m) {
      const size_t header_end = std::min<size_t>(bytes.size(), 8 + header_len);
      switch (pick(7)) {
        case 0: if (header_end > 8) bytes[8 + pick(header_end - 8)] = static_cast<char>(rng()); break;
        case 1: if (!bytes.empty()) bytes[pick(bytes.size())] ^= static_cast<char>(1u << pick(8)); break;
        case 2: bytes.resize(pick(bytes.size() + 1)); break;
        case 3: if (bytes.size() >= 8) bytes[pick(8)] = static_cast<char>(rng()); break;
        case 4: {  // splice a JSON token into the header
          const std::string& token = tokens[pick(tokens.size())];
          if (header_end > 8) bytes.replace(8 + pick(header_end - 8), pick(6), token);
          break;
        }
        case 5: if (header_end > 9) bytes.erase(8 + pick(header_end - 8), 1 + pick(3)); break;
        case 6: {  // change a digit: shifts offsets and shapes by small amounts
          for (int tries = 0; tries < 20 && header_end > 8; ++tries) {
            size_t at = 8 + pick(header_end - 8);
            if (std::isdigit(static_cast<unsigned char>(bytes[at]))) {
              bytes[at] = static_cast<char>('0' + pick(10));
              break;
            }
          }
          break;
        }
      }
    }
    // An exact-size heap copy, so reading one byte past the end is caught by ASan.
    std::unique_ptr<std::byte[]> buffer(new std::byte[std::max<size_t>(bytes.size(), 1)]);
    std::memcpy(buffer.get(), bytes.data(), bytes.size());
    try {
      auto views = io::parse_safetensors(buffer.get(), bytes.size(), "fuzz.safetensors");
      ++accepted;
      for (const auto& view : views) {
        ASSERT_GE(view.data, buffer.get());
        ASSERT_LE(view.data + view.nbytes, buffer.get() + bytes.size());
        ASSERT_EQ(view.nbytes, static_cast<size_t>(view.numel()) * io::dtype_size(view.dtype));
        volatile float sink = 0;
        for (float v : io::to_float32(view)) sink = sink + v;  // touch every byte
      }
    } catch (const Error& e) {
      ++rejected;
      ASSERT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      ASSERT_NE(std::string(e.what()).find("fuzz.safetensors"), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iteration << ": not a guardkit::Error: " << e.what();
    }
  }
  // Both outcomes must occur, or the mutations are not exercising the parser.
  EXPECT_GT(accepted, 50);
  EXPECT_GT(rejected, 1000);
}
