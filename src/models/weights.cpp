#include "models/weights.h"

#include <torch/torch.h>

#include "util/error.h"

namespace guardkit::models {

c10::ScalarType to_scalar_type(io::DType dtype) {
  switch (dtype) {
    case io::DType::F64: return at::kDouble;
    case io::DType::F32: return at::kFloat;
    case io::DType::F16: return at::kHalf;
    case io::DType::BF16: return at::kBFloat16;
    case io::DType::I64: return at::kLong;
    case io::DType::I32: return at::kInt;
    case io::DType::I16: return at::kShort;
    case io::DType::I8: return at::kChar;
    case io::DType::U8: return at::kByte;
    case io::DType::BOOL: return at::kBool;
  }
  fail("unsupported dtype");
}

io::DType to_io_dtype(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return io::DType::F64;
    case at::kFloat: return io::DType::F32;
    case at::kHalf: return io::DType::F16;
    case at::kBFloat16: return io::DType::BF16;
    case at::kLong: return io::DType::I64;
    case at::kInt: return io::DType::I32;
    case at::kShort: return io::DType::I16;
    case at::kChar: return io::DType::I8;
    case at::kByte: return io::DType::U8;
    case at::kBool: return io::DType::BOOL;
    default: fail("dtype {} cannot be stored in safetensors", c10::toString(dtype));
  }
}

at::Tensor tensor_from_view(const io::TensorView& view, c10::ScalarType dtype, c10::Device device, bool zero_copy_ok) {
  const c10::ScalarType source_type = to_scalar_type(view.dtype);
  // from_blob needs a non-const pointer; the mapping is read-only, so the tensor must never be written unless copied.
  at::Tensor raw = at::from_blob(const_cast<std::byte*>(view.data), view.shape,
                                 at::TensorOptions().dtype(source_type).device(at::kCPU));
  const bool aligned = reinterpret_cast<uintptr_t>(view.data) % c10::elementSize(source_type) == 0;
  if (zero_copy_ok && aligned && source_type == dtype && device.is_cpu()) return raw;
  if (!aligned) raw = raw.clone();  // unaligned data (odd header padding): copy once into aligned memory
  return raw.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
}

WeightLoader::WeightLoader(std::shared_ptr<const io::Checkpoint> checkpoint, c10::ScalarType dtype, c10::Device device)
    : checkpoint_(std::move(checkpoint)), dtype_(dtype), device_(device) {}

bool WeightLoader::has(const std::string& name) const { return checkpoint_->find(name) != nullptr; }

at::Tensor WeightLoader::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const io::TensorView* view = checkpoint_->find(name);
  if (!view) fail("{}: missing tensor '{}'", checkpoint_->location().string(), name);
  if (!shape.empty() && view->shape != shape)
    fail("{}: tensor '{}' has shape [{}] but the config implies [{}]", checkpoint_->location().string(), name,
         fmt::join(view->shape, ", "), fmt::join(shape, ", "));
  switch (view->dtype) {
    case io::DType::F32: case io::DType::F16: case io::DType::BF16: case io::DType::F64: break;
    default: fail("{}: tensor '{}' has dtype {}, expected a floating-point type", checkpoint_->location().string(), name,
                  io::dtype_name(view->dtype));
  }
  used_.insert(name);
  return tensor_from_view(*view, dtype_, device_);
}

void WeightLoader::check_all_used(const std::vector<std::string>& ignored_substrings) const {
  std::vector<std::string> unused;
  for (const std::string& name : checkpoint_->names()) {
    if (used_.count(name)) continue;
    bool ignored = false;
    for (const auto& s : ignored_substrings) ignored = ignored || name.find(s) != std::string::npos;
    if (!ignored) unused.push_back(name);
  }
  if (!unused.empty())
    fail("{}: unexpected tensor{} for this architecture: {}", checkpoint_->location().string(),
         unused.size() > 1 ? "s" : "", fmt::join(unused, ", "));
}

void save_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<at::Tensor> keep;
  std::vector<io::TensorToWrite> out;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    keep.push_back(cpu);
    io::TensorToWrite w;
    w.name = name;
    w.dtype = to_io_dtype(cpu.scalar_type());
    w.shape = cpu.sizes().vec();
    w.data = cpu.data_ptr();
    w.nbytes = cpu.nbytes();
    out.push_back(w);
  }
  io::write_safetensors(path, out);
}

}  // namespace guardkit::models
