#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "test_util.h"
#include "util/error.h"

using namespace guardkit;

TEST(Safetensors, ReadsDebertaFixture) {
  auto checkpoint = io::Checkpoint::open(test::fixture("deberta"));
  const io::TensorView& embeddings = checkpoint.get("deberta.embeddings.word_embeddings.weight");
  EXPECT_EQ(embeddings.dtype, io::DType::F32);
  EXPECT_EQ(embeddings.shape, (std::vector<int64_t>{801, 32}));
  // Row 0 ([PAD]) is zero in the fixture.
  const float* row0 = reinterpret_cast<const float*>(embeddings.data);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(row0[i], 0.0f);
}

TEST(Safetensors, MissingTensorNamesCheckpoint) {
  auto checkpoint = io::Checkpoint::open(test::fixture("deberta"));
  try {
    checkpoint.get("no.such.tensor");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no.such.tensor"), std::string::npos);
  }
}
