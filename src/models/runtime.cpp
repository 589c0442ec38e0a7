#include "models/runtime.h"

#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "util/error.h"

namespace guardkit::models {

void init_runtime(int threads) {
  if (threads <= 0) {
    if (const char* env = std::getenv("GUARDKIT_THREADS"); env && *env) threads = std::atoi(env);
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
#if defined(__GLIBC__)
  // glibc serves every block over its dynamic mmap threshold with a fresh mmap and unmaps it on free, so a training
  // step that allocates a few multi-MB tensors pays their page faults every time (the router's bf16 step: 16.0 ->
  // 13.3 ms, bench_router). Keep blocks up to 64 MB in the heap and up to 256 MB of free heap mapped, as PyTorch's
  // tuning guide does with jemalloc/tcmalloc. Users who set glibc's own knobs keep theirs.
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_") && !std::getenv("MALLOC_TRIM_THRESHOLD_") && !std::getenv("GLIBC_TUNABLES")) {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 64 << 20);
  }
#endif
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
