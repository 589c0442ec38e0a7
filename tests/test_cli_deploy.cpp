// The deployment files under deploy/ checked where they can be without Docker or Kubernetes: every YAML document
// parses (Debian's python3-yaml converts it to JSON), the Kubernetes objects name the probes the server answers
// (/readyz, /healthz) on the port it listens on, the grace period covers the drain, and every `guardkit serve` option
// the manifests pass is one the real binary accepts. The Dockerfile builds with the install script and build script
// CI runs, and the runtime stage's packages provide every shared library the built binary links.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "test_util.h"
#include "util/paths.h"

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using guardkit::test::run_command;

const fs::path kSource = GUARDKIT_SOURCE_DIR;

// Every document of a YAML file, as JSON.
std::vector<json> yaml_documents(const fs::path& file) {
  const auto result = run_command(
      "/usr/bin/python3 -c 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))' " +
      file.string());
  EXPECT_EQ(result.exit_code, 0) << file << ": " << result.output;
  if (result.exit_code != 0) return {};
  std::vector<json> documents;
  for (auto& d : json::parse(result.output))
    if (!d.is_null()) documents.push_back(d);
  return documents;
}

json find_kind(const std::vector<json>& documents, const std::string& kind) {
  for (const auto& d : documents)
    if (d.value("kind", "") == kind) return d;
  ADD_FAILURE() << "no " << kind;
  return json::object();
}

// The long options `guardkit serve --help` lists.
std::set<std::string> serve_options() {
  const auto help = guardkit::test::run_guardkit("serve --help", "");
  EXPECT_EQ(help.exit_code, 0) << help.output;
  std::set<std::string> options;
  const std::regex option(R"(--[a-z][a-z0-9-]*)");
  for (std::sregex_iterator it(help.output.begin(), help.output.end(), option), end; it != end; ++it)
    options.insert(it->str());
  return options;
}

void expect_known_serve_options(const json& args, const std::string& where) {
  static const std::set<std::string> known = serve_options();
  ASSERT_TRUE(args.is_array() && !args.empty() && args[0] == "serve") << where << ": " << args.dump();
  for (const auto& a : args)
    if (a.get<std::string>().rfind("--", 0) == 0) EXPECT_TRUE(known.count(a.get<std::string>())) << where << ": " << a;
}

double option_value(const json& args, const std::string& name, double fallback) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == name) return std::stod(args[i + 1].get<std::string>());
  return fallback;
}

TEST(Deploy, KubernetesServingFleetNamesTheServersProbesPortAndDrain) {
  const auto documents = yaml_documents(kSource / "deploy/k8s/serve.yaml");
  const json deployment = find_kind(documents, "Deployment");
  const json& pod = deployment["spec"]["template"];
  const json& container = pod["spec"]["containers"][0];
  EXPECT_EQ(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);

  const json& args = container["args"];
  expect_known_serve_options(args, "serve.yaml");
  const double port = option_value(args, "--port", 8080);
  EXPECT_EQ(container["ports"][0]["containerPort"].get<double>(), port);
  EXPECT_NE(std::find(args.begin(), args.end(), "0.0.0.0"), args.end()) << "a pod must listen on 0.0.0.0";
  const std::string port_name = container["ports"][0]["name"];
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["path"], "/readyz");
  EXPECT_EQ(container["readinessProbe"]["httpGet"]["port"], port_name);
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["path"], "/healthz");
  EXPECT_EQ(container["livenessProbe"]["httpGet"]["port"], port_name);

  // SIGTERM: --drain-seconds with /readyz 503, then requests in flight get up to --timeout-ms: all of it before
  // the kubelet's SIGKILL.
  const double drain = option_value(args, "--drain-seconds", 0);
  const double request_timeout = option_value(args, "--timeout-ms", 30000) / 1000.0;
  EXPECT_GT(drain, container["readinessProbe"].value("periodSeconds", 10.0)) << "drain ends before the probe sees 503";
  EXPECT_GT(pod["spec"]["terminationGracePeriodSeconds"].get<double>(), drain + request_timeout);

  const json service = find_kind(documents, "Service");
  EXPECT_EQ(service["spec"]["selector"], pod["metadata"]["labels"]);
  EXPECT_EQ(service["spec"]["ports"][0]["targetPort"], port_name);

  const json autoscaler = find_kind(documents, "HorizontalPodAutoscaler");
  EXPECT_EQ(autoscaler["apiVersion"], "autoscaling/v2");
  EXPECT_EQ(autoscaler["spec"]["scaleTargetRef"]["kind"], "Deployment");
  EXPECT_EQ(autoscaler["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"]);
  EXPECT_GE(autoscaler["spec"]["minReplicas"].get<int>(), 2) << "one replica cannot drain without an outage";
}

TEST(Deploy, IndexedJobRunsOneShardPerIndexWithOptionsEvalAccepts) {
  const auto documents = yaml_documents(kSource / "deploy/k8s/shard-job.yaml");
  const json job = find_kind(documents, "Job");
  EXPECT_EQ(job["spec"]["completionMode"], "Indexed");
  const int completions = job["spec"]["completions"];
  const json& args = job["spec"]["template"]["spec"]["containers"][0]["args"];
  ASSERT_TRUE(args.is_array() && args[0] == "eval") << args;
  // --shard K/N with K the pod's index and N the Job's completions; each index its own output folder.
  auto value_of = [&](const std::string& name) {
    auto it = std::find(args.begin(), args.end(), name);
    return it == args.end() || it + 1 == args.end() ? std::string() : (it + 1)->get<std::string>();
  };
  EXPECT_EQ(value_of("--shard"), fmt::format("$(JOB_COMPLETION_INDEX)/{}", completions));
  EXPECT_NE(value_of("--predictions").find("$(JOB_COMPLETION_INDEX)"), std::string::npos);
  const auto help = guardkit::test::run_guardkit("eval --help", "");
  for (const auto& a : args)
    if (a.get<std::string>().rfind("--", 0) == 0)
      EXPECT_NE(help.output.find(a.get<std::string>()), std::string::npos) << a;
}

TEST(Deploy, ComposeRunsGuardkitAgainstTheLargeGuardServerItsModelsFileNames) {
  const auto documents = yaml_documents(kSource / "deploy/compose/docker-compose.yml");
  ASSERT_EQ(documents.size(), 1u);
  const json& services = documents[0]["services"];
  ASSERT_TRUE(services.contains("guardkit") && services.contains("vllm"));
  const json& args = services["guardkit"]["command"];
  expect_known_serve_options(args, "docker-compose.yml");

  // The guards named on the command line are in the models file, and the remote one points at the vLLM service.
  const json models = guardkit::test::load_json(kSource / "deploy/compose/models.json");
  std::map<std::string, json> by_name;
  for (const auto& m : models["models"]) by_name[m["name"].get<std::string>()] = m;
  for (const char* role : {"--small", "--large"}) {
    auto it = std::find(args.begin(), args.end(), role);
    ASSERT_NE(it, args.end()) << role;
    EXPECT_TRUE(by_name.count((it + 1)->get<std::string>())) << role << " " << *(it + 1);
  }
  const std::string large = *(std::find(args.begin(), args.end(), "--large") + 1);
  EXPECT_EQ(by_name[large]["kind"], "remote");
  EXPECT_EQ(by_name[large]["url"], "http://vllm:8000");
  const json& vllm_command = services["vllm"]["command"];
  EXPECT_NE(std::find(vllm_command.begin(), vllm_command.end(), "8000"), vllm_command.end());
  EXPECT_EQ(by_name[large]["options"]["model"], *(std::find(vllm_command.begin(), vllm_command.end(), "--model") + 1));
}

TEST(Deploy, DockerfileBuildsWithCiScriptsAndItsRuntimePackagesCoverTheBinary) {
  const std::string dockerfile = guardkit::read_file(kSource / "deploy/Dockerfile");
  const std::string ci = guardkit::read_file(kSource / "scripts/test.sh");
  // The build stage runs what CI runs: the install script, then the build script.
  EXPECT_NE(ci.find("./scripts/install-deps.sh"), std::string::npos);
  EXPECT_NE(ci.find("./scripts/build.sh"), std::string::npos);
  EXPECT_NE(dockerfile.find("FROM debian:12 AS build"), std::string::npos);
  EXPECT_NE(dockerfile.find("RUN ./scripts/install-deps.sh\n"), std::string::npos);
  EXPECT_NE(dockerfile.find("./scripts/build.sh"), std::string::npos);
  EXPECT_NE(dockerfile.find("install-deps.sh --runtime"), std::string::npos);
  EXPECT_NE(dockerfile.find("COPY --from=build /src/build/guardkit"), std::string::npos);

  // The runtime package list, as install-deps.sh --runtime installs it.
  const auto listed = run_command("bash -c 'source <(sed -n \"/^RUNTIME_PKGS=/,/)/p\" " +
                                  (kSource / "scripts/install-deps.sh").string() + "); echo ${RUNTIME_PKGS[@]}'");
  ASSERT_EQ(listed.exit_code, 0) << listed.output;
  std::set<std::string> runtime;
  std::istringstream words(listed.output);
  for (std::string w; words >> w;) runtime.insert(w);
  ASSERT_TRUE(runtime.count("libtorch1.13")) << listed.output;

  // Each library the binary links directly comes from one of those packages.
  const auto needed = run_command("readelf -d " + std::string(GUARDKIT_BUILD_DIR) +
                                  "/guardkit | sed -n 's/.*Shared library: \\[\\(.*\\)\\]/\\1/p'");
  ASSERT_EQ(needed.exit_code, 0) << needed.output;
  std::istringstream libraries(needed.output);
  int checked = 0;
  for (std::string library; libraries >> library; ++checked) {
    const auto owner = run_command("dpkg -S '*x86_64-linux-gnu/" + library + "' | head -1 | cut -d: -f1");
    ASSERT_EQ(owner.exit_code, 0) << library;
    std::string package = owner.output.substr(0, owner.output.find_first_of("\n"));
    EXPECT_TRUE(runtime.count(package)) << library << " comes from " << package << ", not in RUNTIME_PKGS";
  }
  EXPECT_GT(checked, 3);
}

}  // namespace
