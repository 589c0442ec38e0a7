// Throughput of guardkit's SentencePiece Unigram tokenizer (DeBERTa-v3 fixture spm.model) on a large mixed text built
// here, line by line, single thread; next to Debian's `spm_encode` (SentencePiece 0.1.97, a separate process, its
// time includes start-up and model load) on the same lines in the same run, when installed.
//   bench_unigram [--mb N] [--model PATH] [--repeats R]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "text/deberta_tokenizer.h"
#include "text/unigram.h"
#include "util/paths.h"

using namespace guardkit;
using namespace guardkit::text;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Mostly English prose (as guard prompts are), with ~15% of lines carrying other scripts, emoji, full-width forms,
// accents, numbers, URLs and whitespace runs.
std::vector<std::string> build_text(size_t target_bytes, uint32_t seed) {
  const std::vector<std::string> words = {
      "the", "of", "and", "to", "a", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with",
      "his", "they", "I", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what",
      "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how",
      "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
      "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
      "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now",
      "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "Please", "ignore", "previous",
      "instructions", "explain", "build", "weapon", "safety", "policy", "harmful", "assistant", "response", "user",
      "question", "answer", "kill", "process", "Python", "bomb", "chemistry", "recipe", "dangerous", "legal",
      "advice", "medical", "hacking", "password", "network", "security", "guidelines", "refuse", "comply",
      "don't", "can't", "it's", "I'm", "you're", "they've", "we'll"};
  const std::vector<std::string> exotic = {
      "Café", "naïve", "résumé", "jalapeño", "Straße", "Ærøskøbing", "你好，世界。", "日本語のテキスト", "한국어",
      "Привет мир", "Γειά σου κόσμε", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "😀", "👍🏽", "👩\u200d💻",
      "🙏", "ＦＵＬＬＷＩＤＴＨ", "１２３", "ﬁnance", "ﬂow", "é", "https://example.com/a?b=c&d=e",
      "user@example.com", "3.14159", "1,000,000", "$100", "50%", "   ", "\t", "\u00A0", "\u3000", "—", "…", "«»"};
  std::mt19937 rng(seed);
  std::vector<std::string> lines;
  size_t total = 0;
  while (total < target_bytes) {
    std::string line;
    const bool mixed = rng() % 100 < 15;
    const size_t n = 8 + rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      if (i) line += ' ';
      if (mixed && rng() % 4 == 0) line += exotic[rng() % exotic.size()];
      else line += words[rng() % words.size()];
      if (rng() % 12 == 0) line += ",.?!;:"[rng() % 6];
    }
    total += line.size() + 1;
    lines.push_back(std::move(line));
  }
  return lines;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  size_t megabytes = 16;
  int repeats = 3;
  fs::path model_path = shared_dir() / "fixtures" / "deberta" / "spm.model";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--mb") megabytes = std::stoul(argv[i + 1]);
    else if (flag == "--model") model_path = argv[i + 1];
    else if (flag == "--repeats") repeats = std::stoi(argv[i + 1]);
  }
  const std::vector<std::string> lines = build_text(megabytes << 20, 20261128);
  size_t bytes = 0;
  for (const auto& line : lines) bytes += line.size() + 1;
  const double mb = static_cast<double>(bytes) / (1 << 20);
  std::printf("text: %zu lines, %.1f MiB (built in the bench, ~15%% of lines multilingual/emoji/full-width)\n",
              lines.size(), mb);
  std::printf("model: %s\n", model_path.c_str());

  const UnigramModel model = UnigramModel::load(model_path);
  size_t tokens = 0;
  double best = 1e30;
  std::vector<int32_t> ids;
  for (int r = 0; r < repeats; ++r) {
    tokens = 0;
    const auto start = Clock::now();
    for (const auto& line : lines) {
      ids.clear();
      model.encode(line, ids, nullptr);
      tokens += ids.size();
    }
    best = std::min(best, seconds_since(start));
  }
  std::printf("guardkit UnigramModel::encode   : %8.3f s  %8.2f MB/s  %10.0f tokens/s  (%zu tokens, best of %d)\n",
              best, mb / best, tokens / best, tokens, repeats);

  // The full DeBERTa tokenizer path (special-token split + [CLS]/[SEP]) on the same lines.
  const auto tokenizer = DebertaV2Tokenizer::from_dir(model_path.parent_path());
  double best_tok = 1e30;
  size_t tok_tokens = 0;
  for (int r = 0; r < repeats; ++r) {
    tok_tokens = 0;
    const auto start = Clock::now();
    for (const auto& line : lines) tok_tokens += tokenizer->encode_for_model(line).ids.size();
    best_tok = std::min(best_tok, seconds_since(start));
  }
  std::printf("guardkit DebertaV2Tokenizer     : %8.3f s  %8.2f MB/s  %10.0f tokens/s  (%zu tokens incl. specials)\n",
              best_tok, mb / best_tok, tok_tokens / best_tok, tok_tokens);

  if (std::system("command -v spm_encode >/dev/null 2>&1") != 0) {
    std::printf("spm_encode: not installed (apt-get install sentencepiece) - no comparison\n");
    return 0;
  }
  const fs::path dir = fs::temp_directory_path() / ("guardkit_bench_unigram_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    std::ofstream out(dir / "text.txt", std::ios::binary);
    for (const auto& line : lines) out << line << '\n';
  }
  const std::string command = "spm_encode --minloglevel=2 --model='" + model_path.string() +
                              "' --output_format=id --input='" + (dir / "text.txt").string() + "' --output='" +
                              (dir / "ids.txt").string() + "'";
  double best_spm = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    if (std::system(command.c_str()) != 0) {
      std::printf("spm_encode failed\n");
      return 1;
    }
    best_spm = std::min(best_spm, seconds_since(start));
  }
  // Same ids? (a check that both encoded the same thing, on every line)
  std::ifstream in(dir / "ids.txt");
  std::string row;
  size_t line_index = 0, mismatches = 0, spm_tokens = 0;
  while (std::getline(in, row) && line_index < lines.size()) {
    std::istringstream fields(row);
    std::vector<int32_t> reference;
    int32_t id;
    while (fields >> id) reference.push_back(id);
    spm_tokens += reference.size();
    if (reference != model.encode(lines[line_index])) ++mismatches;
    ++line_index;
  }
  fs::remove_all(dir);
  std::printf("spm_encode 0.1.97 (process)     : %8.3f s  %8.2f MB/s  %10.0f tokens/s  (%zu tokens; incl. start-up, "
              "model load, writing ids)\n",
              best_spm, mb / best_spm, spm_tokens / best_spm, spm_tokens);
  std::printf("speed-up vs spm_encode: %.2fx; lines with different ids: %zu of %zu\n", best_spm / best, mismatches,
              line_index);
  return mismatches == 0 ? 0 : 1;
}
