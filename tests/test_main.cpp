// Shared GoogleTest main: engine tests run libtorch on every core, as the CLI does.
#include <gtest/gtest.h>
#ifndef GUARDKIT_TEST_NO_TORCH
#include <ATen/Parallel.h>
#include <thread>
#endif

int main(int argc, char** argv) {
#ifndef GUARDKIT_TEST_NO_TORCH
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
#endif
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
