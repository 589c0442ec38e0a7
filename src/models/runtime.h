// Process-wide libtorch settings: thread count (libtorch defaults to 1 here), device parsing.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <string>

namespace guardkit::models {

// Sets libtorch's intra-op threads: `threads` > 0, else $GUARDKIT_THREADS, else the number of cores.
void init_runtime(int threads = 0);

// "cpu", "cuda", "cuda:1"; throws on unknown names or when CUDA is asked for but this libtorch has none.
c10::Device parse_device(const std::string& name);
// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16".
c10::ScalarType parse_dtype(const std::string& name);

}  // namespace guardkit::models
