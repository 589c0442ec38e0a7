#include "models/runtime.h"

#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#include "util/error.h"

namespace guardkit::models {

void init_runtime(int threads) {
  if (threads <= 0) {
    if (const char* env = std::getenv("GUARDKIT_THREADS"); env && *env) threads = std::atoi(env);
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
}

c10::Device parse_device(const std::string& name) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(name);
  } catch (const std::exception&) {
    fail("unknown device '{}' (use cpu, cuda or cuda:N)", name);
  }
  if (device.is_cuda() && !torch::cuda::is_available())
    fail("device '{}' requested but this libtorch build has no usable CUDA", name);
  return device;
}

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "float") return at::kFloat;
  if (name == "bf16" || name == "bfloat16") return at::kBFloat16;
  if (name == "fp16" || name == "float16" || name == "half") return at::kHalf;
  fail("unknown dtype '{}' (use fp32, bf16 or fp16)", name);
}

}  // namespace guardkit::models
