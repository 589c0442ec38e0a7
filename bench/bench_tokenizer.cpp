// Byte-level BPE throughput (MB/s, tokens/s) on a deterministic mixed-language text, written to a file so the
// transformers.js baseline (bench/tokenizer_js/bench.mjs, run by bench/run_tokenizer_bench.sh) encodes the same
// documents. Prints one JSON line; the FNV-1a checksum of the ids lets the script check both produced the same ids.
//
// Usage: bench_tokenizer TOKENIZER_JSON TEXT_OUT [MEGABYTES=8] [REPS=3]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "text/bpe_tokenizer.h"
#include "util/error.h"

namespace {

// Words of several scripts; sentences pick one script each (English most often), as multilingual chat traffic does.
const std::vector<std::vector<std::string>> kLanguages = {
    {"the", "safety", "model", "classifies", "every", "prompt", "before", "it", "reaches", "assistant", "users",
     "often", "ask", "about", "weather", "recipes", "history", "and", "code", "don't", "it's", "we're", "they'll",
     "Guardrails", "OpenAI-compatible", "server", "responses", "quickly", "refuses", "harmful", "requests", "policy"},
    {"über", "Straße", "Mädchen", "schön", "façade", "naïve", "déjà", "vu", "très", "élève", "año", "niño", "corazón",
     "ação", "informação", "Zürich", "garçon", "crème", "brûlée", "fête"},
    {"привет", "мир", "модель", "безопасность", "запрос", "ответ", "пользователь", "сегодня", "погода", "хорошая",
     "Москва", "книга", "язык", "программа"},
    {"γειά", "σου", "κόσμε", "μοντέλο", "ασφάλεια", "ερώτηση", "απάντηση", "Αθήνα", "θάλασσα"},
    {"你好", "世界", "模型", "安全", "检测", "用户", "请求", "回答", "今天", "天气", "很好", "我们", "中文", "分词器"},
    {"こんにちは", "世界", "モデル", "安全性", "ユーザー", "質問", "回答", "東京", "ありがとう", "トークナイザー"},
    {"안녕하세요", "세계", "모델", "안전", "사용자", "질문", "답변", "서울", "감사합니다"},
    {"مرحبا", "بالعالم", "نموذج", "الأمان", "المستخدم", "سؤال", "جواب", "القاهرة"},
    {"नमस्ते", "दुनिया", "मॉडल", "सुरक्षा", "उपयोगकर्ता", "प्रश्न", "उत्तर", "दिल्ली"},
    {"สวัสดี", "ชาวโลก", "โมเดล", "ความปลอดภัย", "ผู้ใช้", "คำถาม", "กรุงเทพ"},
    {"😀", "👍", "🚀", "❤️", "🎉", "🤖", "👨‍👩‍👧", "🇫🇷", "✅", "🔥"},
};
const std::vector<std::string> kCode = {
    "for (int i = 0; i < n; ++i) {", "  total += values[i] * 2;", "}", "def tokenize(text: str) -> list[int]:",
    "    return [vocab[t] for t in text.split()]", "const url = \"https://example.com/api/v1?q=guard&limit=50\";",
    "SELECT id, name FROM users WHERE score >= 0.75;", "if err != nil { return fmt.Errorf(\"bad: %w\", err) }",
    "\t<div class=\"alert\">{{ message }}</div>"};

std::string make_text(size_t target_bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string text;
  text.reserve(target_bytes + 4096);
  while (text.size() < target_bytes) {
    // One document: a few paragraphs of sentences, single newlines inside, "\n\n" between documents.
    const int sentences = 3 + rng() % 12;
    for (int s = 0; s < sentences; ++s) {
      const unsigned pick = rng() % 100;
      if (pick < 8) {
        text += kCode[rng() % kCode.size()];
        text += "\n";
        continue;
      }
      const auto& words = pick < 50 ? kLanguages[0] : kLanguages[1 + rng() % (kLanguages.size() - 1)];
      const bool spaced = &words != &kLanguages[4] && &words != &kLanguages[5] && &words != &kLanguages[9];
      const int n = 4 + rng() % 16;
      for (int w = 0; w < n; ++w) {
        if (w > 0 && (spaced || rng() % 4 == 0)) text += ' ';
        if (rng() % 25 == 0) text += std::to_string(rng() % 100000);
        else text += words[rng() % words.size()];
        if (rng() % 30 == 0) text += ",";
      }
      static const char* kEnds[] = {".", ".", ".", "?", "!", "。", "...", ":"};
      text += kEnds[rng() % 8];
      if (rng() % 40 == 0) text += " <|eot_id|>";
      text += rng() % 5 == 0 ? "\n" : " ";
    }
    text += "\n\n";
  }
  return text;
}

std::vector<std::string_view> split_documents(std::string_view text) {
  // Exactly JavaScript's text.split("\n\n").
  std::vector<std::string_view> docs;
  size_t start = 0;
  for (size_t pos = text.find("\n\n"); pos != std::string_view::npos; pos = text.find("\n\n", start)) {
    docs.push_back(text.substr(start, pos - start));
    start = pos + 2;
  }
  docs.push_back(text.substr(start));
  return docs;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON TEXT_OUT [MEGABYTES=8] [REPS=3]\n", argv[0]);
    return 2;
  }
  try {
    const double megabytes = argc > 3 ? std::stod(argv[3]) : 8.0;
    const int reps = argc > 4 ? std::stoi(argv[4]) : 3;
    const std::string text = make_text(static_cast<size_t>(megabytes * 1e6), 20261128);
    std::ofstream(argv[2], std::ios::binary) << text;
    const auto docs = split_documents(text);

    auto t0 = std::chrono::steady_clock::now();
    const auto tokenizer = guardkit::text::BpeTokenizer::from_file(argv[1]);
    const double load_s = seconds_since(t0);

    std::string json = fmt::format("{{\"runtime\": \"guardkit BpeTokenizer\", \"bytes\": {}, \"docs\": {}, \"load_s\": {:.3f}",
                                   text.size(), docs.size(), load_s);
    for (bool parse_special : {true, false}) {
      std::vector<double> times;
      size_t tokens = 0;
      uint32_t checksum = 0;
      for (int r = 0; r < reps; ++r) {
        t0 = std::chrono::steady_clock::now();
        size_t count = 0;
        uint32_t hash = 2166136261u;
        for (const auto& doc : docs) {
          const auto ids = tokenizer->encode(doc, parse_special);
          count += ids.size();
          for (int32_t id : ids) hash = (hash ^ static_cast<uint32_t>(id)) * 16777619u;
        }
        times.push_back(seconds_since(t0));
        tokens = count;
        checksum = hash;
      }
      json += fmt::format(", \"{}\": {{\"encode_s\": [", parse_special ? "special" : "plain");
      for (size_t k = 0; k < times.size(); ++k) json += fmt::format("{}{:.4f}", k ? ", " : "", times[k]);
      json += fmt::format("], \"tokens\": {}, \"checksum\": {}}}", tokens, checksum);
    }
    json += "}";
    std::printf("%s\n", json.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
