// FLOPs estimate and parameter counts from config.json, checked against the fixture checkpoints' real tensor sizes and
// against FLOPs counted by hand.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "eval/cost.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "util/error.h"

namespace guardkit::eval {
namespace {

int64_t checkpoint_parameters(const std::filesystem::path& dir) {
  io::Checkpoint checkpoint = io::Checkpoint::open(dir);
  int64_t total = 0;
  for (const auto& name : checkpoint.names()) total += checkpoint.get(name).numel();
  return total;
}

TEST(Cost, ParameterCountsMatchTheFixtureCheckpoints) {
  TransformerShape deberta = load_shape(test::fixture("deberta"));
  EXPECT_FALSE(deberta.causal);
  EXPECT_EQ(deberta.relative_positions, 512);  // 2 x position_buckets
  EXPECT_EQ(deberta.num_labels, 2);
  EXPECT_EQ(deberta.total_parameters(), checkpoint_parameters(test::fixture("deberta")));  // 60,354

  TransformerShape llama = load_shape(test::fixture("llama/config.json"));
  EXPECT_TRUE(llama.causal);
  EXPECT_EQ(llama.kv_heads, 2);
  EXPECT_EQ(llama.head_dim, 4);
  EXPECT_EQ(llama.total_parameters(), checkpoint_parameters(test::fixture("llama")));  // tied LM head
}

TEST(Cost, FlopsCountedByHand) {
  // Llama fixture: d 16, 2 layers, 4 heads x 4, 2 kv heads, SwiGLU 32, vocab 128256.
  TransformerShape llama = load_shape(test::fixture("llama"));
  // Per layer: q,o 2*16*16 + k,v 2*16*8 + mlp 3*16*32 = 512 + 256 + 1536 = 2304 -> 4608 matmul weights.
  EXPECT_EQ(llama.layer_matmul_parameters(), 4608);
  // T = 10, no cache: 2*4608*10 + attention 2 layers * 4 * 16 * (10*11/2) + LM head 2*16*128256 (one position).
  EXPECT_DOUBLE_EQ(forward_flops(llama, 10), 2.0 * 4608 * 10 + 2 * 4 * 16 * 55.0 + 2.0 * 16 * 128256);
  // 3 new tokens after 7 cached: pairs 3*7 + 3*4/2 = 27.
  EXPECT_DOUBLE_EQ(forward_flops(llama, 3, 7), 2.0 * 4608 * 3 + 2 * 4 * 16 * 27.0 + 2.0 * 16 * 128256);
  // The cached prefix saves exactly the prefix's own work.
  EXPECT_LT(forward_flops(llama, 3, 7), forward_flops(llama, 10));

  // DeBERTa fixture: d 32, 2 layers, MLP 64, 512 relative positions, 2 labels. T = 8:
  // 2*16384*8 (8192 matmul weights a layer) + 2*4*32*64 (QK, AV) + 2*4*32*8*512 (c2p, p2c) + 2*2*2*512*32*32 (relative projections)
  // + 2*(32*32 + 32*2) (pooler, classifier).
  TransformerShape deberta = load_shape(test::fixture("deberta"));
  const double expected = 2.0 * 16384 * 8 + 2 * 4.0 * 32 * 64 + 2 * 4.0 * 32 * 8 * 512 + 2 * 4.0 * 512 * 32 * 32 +
                          2.0 * (32 * 32 + 32 * 2);
  EXPECT_DOUBLE_EQ(forward_flops(deberta, 8), expected);
  EXPECT_EQ(forward_flops(deberta, 0), 0.0);
}

TEST(Cost, BadConfigsNameTheField) {
  nlohmann::json config = {{"model_type", "llama"}, {"hidden_size", 16}};
  try {
    shape_from_config(config, "x/config.json");
    FAIL() << "expected an error";
  } catch (const guardkit::Error& e) {
    EXPECT_STREQ(e.what(), "x/config.json: missing integer field 'num_hidden_layers'");
  }
  EXPECT_THROW(shape_from_config(nlohmann::json::array(), "c"), guardkit::Error);
  EXPECT_THROW(load_shape("/nonexistent/model"), guardkit::Error);
}

TEST(Cost, MemoryAndFormatting) {
  const int64_t current_before = current_rss_bytes();
  EXPECT_GT(current_before, 0);
  {
    std::vector<char> block(64 << 20, 1);  // touch 64 MiB
    volatile char sink = block[block.size() - 1];
    (void)sink;
    const int64_t current = current_rss_bytes();
    EXPECT_GE(current, current_before + (48 << 20));
    EXPECT_GE(peak_rss_bytes(), current);  // the peak is never below what is resident now
  }
  EXPECT_GE(peak_rss_bytes(), current_before + (48 << 20));  // and remembers the freed block
  EXPECT_EQ(format_flops(1.5e12), "1.5 TFLOP");
  EXPECT_EQ(format_flops(999), "999 FLOP");
  EXPECT_EQ(format_bytes(3 << 20), "3 MiB");
}

}  // namespace
}  // namespace guardkit::eval
