// Weight lookup over a safetensors checkpoint (after CTranslate2): models ask for their tensors by full Hugging Face
// name and expected shape; every mismatch is a one-line error naming the checkpoint and the tensor.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace guardkit::models {

// Converts a view to a tensor of `dtype` on `device`. Zero-copy (the tensor aliases the mmap) when dtype and device
// already match and the caller does not need to write to it; otherwise a converted copy.
at::Tensor tensor_from_view(const io::TensorView& view, c10::ScalarType dtype, c10::Device device,
                            bool zero_copy_ok = true);

c10::ScalarType to_scalar_type(io::DType dtype);
io::DType to_io_dtype(c10::ScalarType dtype);

class WeightLoader {
 public:
  WeightLoader(std::shared_ptr<const io::Checkpoint> checkpoint, c10::ScalarType dtype, c10::Device device);

  // Loads `name` (full name) checking its shape; an empty `shape` skips the check.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape = {}) const;
  bool has(const std::string& name) const;

  // After a model is built: throws listing the checkpoint tensors nobody asked for, except those matching any of the
  // given substrings (e.g. "rotary_emb.inv_freq", which HF may save).
  void check_all_used(const std::vector<std::string>& ignored_substrings = {}) const;

  c10::ScalarType dtype() const { return dtype_; }
  c10::Device device() const { return device_; }
  const io::Checkpoint& checkpoint() const { return *checkpoint_; }

 private:
  std::shared_ptr<const io::Checkpoint> checkpoint_;
  c10::ScalarType dtype_;
  c10::Device device_;
  mutable std::set<std::string> used_;
};

// Writes named tensors as safetensors (any device/dtype; converted to contiguous CPU).
void save_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace guardkit::models
