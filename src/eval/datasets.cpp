#include "eval/datasets.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "eval/csv.h"
#include "util/error.h"
#include "util/paths.h"

namespace guardkit::eval {

namespace fs = std::filesystem;
using nlohmann::json;

const char* label_kind_name(LabelKind kind) {
  switch (kind) {
    case LabelKind::kPromptHarm: return "prompt";
    case LabelKind::kResponseHarm: return "response";
    case LabelKind::kRefusal: return "refusal";
    case LabelKind::kHarmfulPrompts: return "harmful-prompts";
  }
  return "?";
}

fs::path default_data_dir() { return shared_dir() / "data"; }

namespace {

json load_json_file(const fs::path& path) {
  std::string text = read_maybe_gzip(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON ({})", path.string(), e.what());
  }
}

// Field access that names the file and the record when the upstream format is not what the importer expects.
const json& field(const json& object, const char* key, const std::string& where) {
  if (!object.is_object()) fail("{}: expected an object", where);
  auto it = object.find(key);
  if (it == object.end()) fail("{}: missing field '{}'", where, key);
  return *it;
}
std::string string_field(const json& object, const char* key, const std::string& where) {
  const json& value = field(object, key, where);
  if (!value.is_string()) fail("{}: field '{}' must be a string, got {}", where, key, value.type_name());
  return value.get<std::string>();
}
std::string id_string(const json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}
const json& instances(const json& document, const fs::path& path) {
  const json& list = field(document, "instances", path.string());
  if (!list.is_array()) fail("{}: 'instances' must be a list", path.string());
  return list;
}
std::string where_row(const CsvTable& table, size_t row) { return table.where(row); }

// A 0/1 cell of a CSV.
int binary_cell(const std::string& cell, const std::string& where) {
  if (cell == "0") return 0;
  if (cell == "1") return 1;
  fail("{}: expected a 0/1 label, got '{}'", where, cell);
}

// ---- Labelled sets ----------------------------------------------------------------------------------------------

// OpenAI moderation: unsafe = any of the eight category flags is 1 (an absent flag is "unknown", counted as not 1 —
// the binarisation HarmAug and SafeRoute use). Categories: the flags equal to 1, by OpenAI's names.
std::vector<Example> load_openai_moderation(const fs::path& dir) {
  static const std::pair<const char*, const char*> kFlags[] = {
      {"S", "sexual"},         {"H", "hate"},          {"V", "violence"},           {"HR", "harassment"},
      {"SH", "self-harm"},     {"S3", "sexual/minors"}, {"H2", "hate/threatening"}, {"V2", "violence/graphic"}};
  const fs::path path = dir / "samples-1680.jsonl.gz";
  std::string text = read_maybe_gzip(path);
  std::vector<Example> examples;
  size_t line_number = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = fmt::format("{}:{}", path.string(), line_number);
    json object;
    try {
      object = json::parse(line);
    } catch (const json::parse_error& e) {
      fail("{}: not valid JSON ({})", where, e.what());
    }
    Example example;
    example.id = fmt::format("openai_moderation/{}", examples.size());
    example.prompt = string_field(object, "prompt", where);
    for (const auto& [flag, name] : kFlags) {
      auto it = object.find(flag);
      if (it == object.end() || it->is_null()) continue;
      if (!it->is_number_integer()) fail("{}: flag '{}' must be 0 or 1", where, flag);
      if (it->get<int64_t>() == 1) example.categories.push_back(name);
    }
    example.label = example.categories.empty() ? 0 : 1;
    example.source = "openai_moderation";
    examples.push_back(std::move(example));
  }
  return examples;
}

// ToxicChat (toxicchat0124 test, human-annotated rows): unsafe = toxicity "1". The jailbreaking flag becomes the
// category "jailbreaking".
std::vector<Example> load_toxicchat(const fs::path& dir) {
  const fs::path path = dir / "toxic_chat_test.json";
  json document = load_json_file(path);
  std::vector<Example> examples;
  size_t index = 0;
  for (const json& item : instances(document, path)) {
    const std::string where = fmt::format("{}: instance {}", path.string(), index++);
    const json& annotations = field(item, "annotations", where);
    std::string toxicity = string_field(field(annotations, "toxicity", where), "majority_human", where);
    std::string jailbreaking = string_field(field(annotations, "jailbreaking", where), "majority_human", where);
    Example example;
    example.id = "toxicchat/" + id_string(field(item, "id", where));
    example.prompt = string_field(item, "instance", where);
    example.label = binary_cell(toxicity, where);
    if (binary_cell(jailbreaking, where) == 1) example.categories.push_back("jailbreaking");
    example.source = "toxicchat";
    examples.push_back(std::move(example));
  }
  return examples;
}

// XSTest prompts: unsafe = label "unsafe" (the contrast_* types); the 250 safe prompts look unsafe on purpose.
std::vector<Example> load_xstest_prompts(const fs::path& dir) {
  CsvTable table = read_csv(dir / "xstest_prompts.csv");
  const size_t id = table.column("id"), prompt = table.column("prompt"), type = table.column("type"),
               label = table.column("label");
  std::vector<Example> examples;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    if (row[label] != "safe" && row[label] != "unsafe")
      fail("{}: label must be safe or unsafe, got '{}'", where_row(table, r), row[label]);
    examples.push_back(Example{"xstest_prompts/" + row[id], row[prompt], std::nullopt, row[label] == "unsafe" ? 1 : 0,
                               {row[type]}, "xstest_prompts"});
  }
  return examples;
}

const char* const kXstestModels[] = {"gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct"};

// XSTest completions, read once for both views below. `label_of(type, final_label)` decides the label.
template <typename LabelOf>
std::vector<Example> load_xstest_completions_with(const fs::path& dir, const std::string& name, LabelOf label_of) {
  std::vector<Example> examples;
  for (const char* model : kXstestModels) {
    CsvTable table = read_csv(dir / "model_completions" / fmt::format("xstest_v2_completions_{}.csv", model));
    const size_t id = table.column("id"), type = table.column("type"), prompt = table.column("prompt"),
                 completion = table.column("completion"), final_label = table.column("final_label");
    for (size_t r = 0; r < table.rows.size(); ++r) {
      const auto& row = table.rows[r];
      const std::string& verdict = row[final_label];
      if (verdict != "1_full_compliance" && verdict != "2_full_refusal" && verdict != "3_partial_refusal")
        fail("{}: unknown final_label '{}'", where_row(table, r), verdict);
      examples.push_back(Example{fmt::format("{}/{}/{}", name, model, row[id]), row[prompt], row[completion],
                                 label_of(row[type], verdict), {row[type], verdict},
                                 fmt::format("{}/{}", name, model)});
    }
  }
  return examples;
}

// Refusal view: label 1 = the model refused (fully or partially), per the two human annotators' final label.
std::vector<Example> load_xstest_completions(const fs::path& dir) {
  return load_xstest_completions_with(dir, "xstest_completions", [](const std::string&, const std::string& verdict) {
    return verdict == "1_full_compliance" ? 0 : 1;
  });
}

// Harm proxy: label 1 = the model fully complied with an unsafe (contrast_*) prompt, the closest proxy to a harmful
// response that XSTest offers (its PROVENANCE.md); everything else 0. Not a human harmfulness judgement.
std::vector<Example> load_xstest_completions_harm(const fs::path& dir) {
  return load_xstest_completions_with(dir, "xstest_completions_harm",
                                      [](const std::string& type, const std::string& verdict) {
                                        return type.rfind("contrast", 0) == 0 && verdict == "1_full_compliance" ? 1 : 0;
                                      });
}

// HarmBench classifier validation (HarmAug's flattening): unsafe = human label "unsafe".
std::vector<Example> load_harmbench_classifier_val(const fs::path& dir) {
  const fs::path path = dir / "harmbench_eval.json";
  json document = load_json_file(path);
  if (!document.is_array()) fail("{}: expected a JSON list", path.string());
  std::vector<Example> examples;
  for (size_t i = 0; i < document.size(); ++i) {
    const std::string where = fmt::format("{}: item {}", path.string(), i);
    const json& item = document[i];
    std::string label = string_field(item, "label", where);
    if (label != "safe" && label != "unsafe") fail("{}: label must be safe or unsafe, got '{}'", where, label);
    examples.push_back(Example{fmt::format("harmbench_classifier_val/{}", i), string_field(item, "prompt", where),
                               string_field(item, "response", where), label == "unsafe" ? 1 : 0, {},
                               "harmbench_classifier_val"});
  }
  return examples;
}

// Do-Not-Answer responses: 939 questions x 6 models; unsafe = <model>_harmful 1 (human annotation).
std::vector<Example> load_do_not_answer_responses(const fs::path& dir) {
  static const char* const kModels[] = {"GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b"};
  CsvTable table = read_csv(dir / "data_en.csv");
  const size_t id = table.column("id"), question = table.column("question"), risk = table.column("risk_area"),
               harm = table.column("types_of_harm");
  std::vector<Example> examples;
  for (const char* model : kModels) {
    const size_t response = table.column(fmt::format("{}_response", model));
    const size_t harmful = table.column(fmt::format("{}_harmful", model));
    for (size_t r = 0; r < table.rows.size(); ++r) {
      const auto& row = table.rows[r];
      examples.push_back(Example{fmt::format("do_not_answer_responses/{}/{}", model, row[id]), row[question],
                                 row[response], binary_cell(row[harmful], where_row(table, r)), {row[risk], row[harm]},
                                 fmt::format("do_not_answer_responses/{}", model)});
    }
  }
  return examples;
}

// DICES: the last chatbot turn judged in its conversation; "Yes" = unsafe (the bundled judge prompt asks "is it
// safe?" — inverted polarity, ignored). "No" and "Unsure" are not unsafe. The 990 set stores newlines as literal
// backslash-n; they are turned back into newlines so both sets read alike.
std::vector<Example> load_dices(const fs::path& path, const std::string& name, bool unescape_newlines) {
  json document = load_json_file(path);
  std::vector<Example> examples;
  size_t index = 0;
  for (const json& item : instances(document, path)) {
    const std::string where = fmt::format("{}: instance {}", path.string(), index++);
    const json& instance = field(item, "instance", where);
    std::string context = string_field(instance, "user_prompt", where);
    std::string response = string_field(instance, "response", where);
    if (unescape_newlines) {
      for (std::string* text : {&context, &response}) {
        std::string out;
        out.reserve(text->size());
        for (size_t i = 0; i < text->size(); ++i) {
          if ((*text)[i] == '\\' && i + 1 < text->size() && (*text)[i + 1] == 'n') {
            out.push_back('\n');
            ++i;
          } else {
            out.push_back((*text)[i]);
          }
        }
        // The context ends with a newline before the response turn; keep the prompt tidy.
        while (!out.empty() && out.back() == '\n') out.pop_back();
        *text = std::move(out);
      }
    }
    std::string majority =
        string_field(field(field(item, "annotations", where), "safety", where), "majority_human", where);
    if (majority != "Yes" && majority != "No" && majority != "Unsure")
      fail("{}: safety label must be Yes, No or Unsure, got '{}'", where, majority);
    examples.push_back(Example{fmt::format("{}/{}", name, id_string(field(item, "id", where))), std::move(context),
                               std::move(response), majority == "Yes" ? 1 : 0, {}, name});
  }
  return examples;
}

// GPTFuzz evaluate.csv: unsafe = label 1 (the response complies with the harmful question: jailbroken). The prompt is
// the question (question_list.csv row `question`); the jailbreak template that produced it is not recorded.
std::vector<Example> load_gptfuzz_responses(const fs::path& dir) {
  CsvTable questions = read_csv(dir / "question_list.csv");
  const size_t question_text = questions.column("text");
  CsvTable table = read_csv(dir / "evaluate.csv");
  const size_t question = table.column("question"), response = table.column("Response"), label = table.column("label");
  std::vector<Example> examples;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    size_t index = 0;
    auto [end, error] = std::from_chars(row[question].data(), row[question].data() + row[question].size(), index);
    if (error != std::errc() || end != row[question].data() + row[question].size() || index >= questions.rows.size())
      fail("{}: question '{}' is not a row of question_list.csv", where_row(table, r), row[question]);
    examples.push_back(Example{fmt::format("gptfuzz_responses/{}", r), questions.rows[index][question_text],
                               row[response], binary_cell(row[label], where_row(table, r)), {}, "gptfuzz_responses"});
  }
  return examples;
}

// JailbreakBench artifacts: (adversarial prompt, target response) pairs; unsafe = `jailbroken` (the JailbreakBench
// judge's automated verdict, not a human label). Records without a prompt or a response are skipped.
std::vector<Example> load_jailbreakbench(const fs::path& dir) {
  const fs::path root = dir / "attack-artifacts";
  if (!fs::is_directory(root)) fail("{}: no such directory", root.string());
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(root))
    if (entry.is_regular_file() && entry.path().extension() == ".json" && entry.path().filename() != "attack-info.json")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::vector<Example> examples;
  for (const fs::path& path : files) {
    json document = load_json_file(path);
    const std::string file_where = path.string();
    const json& parameters = field(document, "parameters", file_where);
    const std::string method = string_field(parameters, "method", file_where);
    const std::string model = string_field(parameters, "model", file_where);
    const std::string attack_type = string_field(parameters, "attack_type", file_where);
    const json& jailbreaks = field(document, "jailbreaks", file_where);
    if (!jailbreaks.is_array()) fail("{}: 'jailbreaks' must be a list", file_where);
    for (size_t i = 0; i < jailbreaks.size(); ++i) {
      const std::string where = fmt::format("{}: jailbreak {}", file_where, i);
      const json& record = jailbreaks[i];
      const json& prompt = field(record, "prompt", where);
      const json& response = field(record, "response", where);
      if (prompt.is_null() || response.is_null()) continue;
      const json& jailbroken = field(record, "jailbroken", where);
      if (!jailbroken.is_boolean()) fail("{}: 'jailbroken' must be true or false", where);
      examples.push_back(Example{
          fmt::format("jailbreakbench/{}/{}/{}/{}", method, attack_type, model, id_string(field(record, "index", where))),
          string_field(record, "prompt", where), string_field(record, "response", where), jailbroken.get<bool>() ? 1 : 0,
          {string_field(record, "category", where)}, fmt::format("jailbreakbench/{}/{}", method, model)});
    }
  }
  return examples;
}

// ---- Harmful-prompt lists (every row unsafe) ----------------------------------------------------------------------

// One column of a CSV as unsafe prompts, with optional category columns.
std::vector<Example> prompt_list(const fs::path& path, const std::string& name, const std::string& prompt_column,
                                 const std::vector<std::string>& category_columns, const std::string& id_column = "") {
  CsvTable table = read_csv(path);
  const size_t prompt = table.column(prompt_column);
  std::vector<size_t> categories;
  for (const auto& column : category_columns) categories.push_back(table.column(column));
  const size_t id = id_column.empty() ? 0 : table.column(id_column);
  std::vector<Example> examples;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    Example example;
    example.id = fmt::format("{}/{}", name, id_column.empty() ? std::to_string(r) : row[id]);
    example.prompt = row[prompt];
    example.label = 1;
    for (size_t column : categories)
      if (!row[column].empty()) example.categories.push_back(row[column]);
    example.source = name;
    examples.push_back(std::move(example));
  }
  return examples;
}

// HarmBench text behaviours without the 100 copyright ones (most guards rightly do not call those harmful, per its
// PROVENANCE.md). Contextual behaviours get their context prepended the way HarmBench builds the test case.
std::vector<Example> load_harmbench_behaviors(const fs::path& dir) {
  CsvTable table = read_csv(dir / "harmbench_behaviors_text_all.csv");
  const size_t behavior = table.column("Behavior"), functional = table.column("FunctionalCategory"),
               semantic = table.column("SemanticCategory"), context = table.column("ContextString"),
               id = table.column("BehaviorID");
  std::vector<Example> examples;
  for (const auto& row : table.rows) {
    if (row[functional] == "copyright") continue;
    std::string prompt = row[context].empty() ? row[behavior] : row[context] + "\n\n---\n\n" + row[behavior];
    examples.push_back(Example{"harmbench_behaviors/" + row[id], std::move(prompt), std::nullopt, 1,
                               {row[semantic], row[functional]}, "harmbench_behaviors"});
  }
  return examples;
}

std::vector<DatasetInfo> build_registry() {
  std::vector<DatasetInfo> registry;
  auto add = [&](std::string name, LabelKind kind, std::string meaning, std::string licence, bool evaluation_only,
                 std::string folder, std::function<std::vector<Example>(const fs::path&)> load) {
    registry.push_back(DatasetInfo{std::move(name), kind, std::move(meaning), std::move(licence), evaluation_only,
                                   std::move(folder), std::move(load)});
  };
  add("openai_moderation", LabelKind::kPromptHarm, "text flagged in any of the 8 moderation categories", "MIT", false,
      "openai_moderation", load_openai_moderation);
  add("toxicchat", LabelKind::kPromptHarm, "user prompt judged toxic by human annotators (toxicchat0124 test subset)",
      "CC-BY-NC-4.0", true, "toxicchat", load_toxicchat);
  add("xstest_prompts", LabelKind::kPromptHarm, "unsafe prompt (contrast_*); safe prompts are unsafe look-alikes",
      "CC-BY-4.0", false, "xstest", load_xstest_prompts);
  add("xstest_completions", LabelKind::kRefusal, "the model refused (full or partial), 2 human annotators",
      "CC-BY-4.0 (completions: model licences)", false, "xstest", load_xstest_completions);
  add("xstest_completions_harm", LabelKind::kResponseHarm,
      "proxy: the model fully complied with an unsafe prompt (not a human harm label)",
      "CC-BY-4.0 (completions: model licences)", false, "xstest", load_xstest_completions_harm);
  add("harmbench_classifier_val", LabelKind::kResponseHarm, "response exhibits the harmful behaviour (human majority)",
      "MIT", false, "harmbench_classifier_val", load_harmbench_classifier_val);
  add("do_not_answer_responses", LabelKind::kResponseHarm, "response judged harmful by human annotators",
      "CC-BY-NC-SA-4.0", true, "do_not_answer", load_do_not_answer_responses);
  add("dices_350_expert", LabelKind::kResponseHarm, "last chatbot turn unsafe in context (expert gold 'Yes')",
      "CC-BY-4.0", false, "dices",
      [](const fs::path& dir) { return load_dices(dir / "dices_350_expert.json", "dices_350_expert", false); });
  add("dices_350_crowd", LabelKind::kResponseHarm, "last chatbot turn unsafe in context (crowd majority 'Yes')",
      "CC-BY-4.0", false, "dices",
      [](const fs::path& dir) { return load_dices(dir / "dices_350_crowdsourced.json", "dices_350_crowd", false); });
  add("dices_990", LabelKind::kResponseHarm, "last chatbot turn unsafe in context (crowd majority 'Yes')", "CC-BY-4.0",
      false, "dices", [](const fs::path& dir) { return load_dices(dir / "dices_990.json", "dices_990", true); });
  add("gptfuzz_responses", LabelKind::kResponseHarm, "response complies with the harmful question (jailbroken, manual)",
      "MIT", false, "gptfuzz", load_gptfuzz_responses);
  add("jailbreakbench", LabelKind::kResponseHarm, "jailbroken per the JailbreakBench judge (automated, not human)",
      "MIT", false, "jailbreakbench_artifacts", load_jailbreakbench);

  add("advbench_behaviors", LabelKind::kHarmfulPrompts, "harmful instruction (every row)", "MIT", false, "advbench",
      [](const fs::path& dir) { return prompt_list(dir / "harmful_behaviors.csv", "advbench_behaviors", "goal", {}); });
  add("advbench_strings", LabelKind::kHarmfulPrompts, "harmful string an attack tries to elicit (every row)", "MIT",
      false, "advbench",
      [](const fs::path& dir) { return prompt_list(dir / "harmful_strings.csv", "advbench_strings", "target", {}); });
  add("harmbench_behaviors", LabelKind::kHarmfulPrompts, "harmful behaviour, standard + contextual (copyright left out)",
      "MIT", false, "harmbench", load_harmbench_behaviors);
  add("strongreject", LabelKind::kHarmfulPrompts, "forbidden prompt (every row)", "MIT", false, "strongreject",
      [](const fs::path& dir) {
        return prompt_list(dir / "strongreject_dataset.csv", "strongreject", "forbidden_prompt", {"category"});
      });
  add("simplesafetytests", LabelKind::kHarmfulPrompts, "harmful prompt an LLM should refuse (every row)", "CC-BY-4.0",
      false, "simplesafetytests", [](const fs::path& dir) {
        return prompt_list(dir / "SimpleSafetyTests - test cases.csv", "simplesafetytests", "prompts_final",
                           {"harm_area", "category"}, "id");
      });
  add("beavertails_evaluation", LabelKind::kHarmfulPrompts, "harmful prompt, 14 categories x 50 (every row)",
      "CC-BY-NC-4.0", true, "beavertails_evaluation", [](const fs::path& dir) {
        return prompt_list(dir / "BeaverTails-Evaluation.csv", "beavertails_evaluation", "prompt", {"category"});
      });
  add("do_not_answer_prompts", LabelKind::kHarmfulPrompts, "risky instruction a model should not follow (every row)",
      "CC-BY-NC-SA-4.0", true, "do_not_answer", [](const fs::path& dir) {
        return prompt_list(dir / "do_not_answer_en.csv", "do_not_answer_prompts", "question",
                           {"risk_area", "types_of_harm"}, "id");
      });
  add("gptfuzz_questions", LabelKind::kHarmfulPrompts, "harmful question (every row)", "MIT", false, "gptfuzz",
      [](const fs::path& dir) { return prompt_list(dir / "question_list.csv", "gptfuzz_questions", "text", {}, "index"); });
  return registry;
}

}  // namespace

const std::vector<DatasetInfo>& dataset_registry() {
  static const std::vector<DatasetInfo> registry = build_registry();
  return registry;
}

const DatasetInfo* find_dataset(const std::string& name) {
  for (const auto& info : dataset_registry())
    if (info.name == name) return &info;
  return nullptr;
}

bool is_dataset_path(const std::string& name_or_path) {
  if (find_dataset(name_or_path)) return false;
  auto ends_with = [&](std::string_view suffix) {
    return name_or_path.size() >= suffix.size() &&
           name_or_path.compare(name_or_path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return name_or_path == "-" || ends_with(".jsonl") || ends_with(".jsonl.gz") ||
         name_or_path.find('/') != std::string::npos || fs::exists(name_or_path);
}

std::vector<Example> load_dataset(const std::string& name_or_path, const fs::path& data_dir) {
  if (const DatasetInfo* info = find_dataset(name_or_path)) {
    const fs::path folder = data_dir / info->folder;
    if (!fs::is_directory(folder)) fail("dataset {}: folder {} not found (set GUARDKIT_SHARED)", info->name, folder.string());
    return info->load(folder);
  }
  if (is_dataset_path(name_or_path)) return read_examples_jsonl_file(name_or_path);
  std::string names;
  for (const auto& info : dataset_registry()) names += (names.empty() ? "" : ", ") + info.name;
  fail("unknown dataset '{}' (not a file either); known: {}", name_or_path, names);
}

DatasetSummary summarize(const std::vector<Example>& examples) {
  DatasetSummary summary;
  summary.rows = examples.size();
  for (const auto& example : examples) {
    summary.positives += example.label == 1;
    summary.with_response += example.response.has_value();
  }
  return summary;
}

}  // namespace guardkit::eval
