#include "eval/data_fetch.h"

#include <httplib.h>
#include <openssl/evp.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>

#include "eval/datasets.h"
#include "util/error.h"

namespace guardkit::eval {

namespace fs = std::filesystem;

const std::vector<DataSource>& data_sources() {
  static const std::vector<DataSource> sources = {
#include "eval/data_sources.inc"
  };
  return sources;
}

namespace {

// Incremental sha256 (OpenSSL EVP), so a download is hashed as it streams to disk.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) fail("sha256: OpenSSL could not start a digest");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const char* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_, digest, &length);
    std::string out;
    for (unsigned int i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string folder_of(const DataSource& source) { return source.path.substr(0, source.path.find('/')); }

// The folders `only` names (a folder, or a registry dataset name standing for its folder), in table order.
std::vector<std::string> select_folders(const std::vector<std::string>& only) {
  std::vector<std::string> all;
  for (const auto& source : data_sources())
    if (std::find(all.begin(), all.end(), folder_of(source)) == all.end()) all.push_back(folder_of(source));
  if (only.empty()) return all;
  std::vector<std::string> wanted;
  for (const auto& name : only) {
    const DatasetInfo* info = find_dataset(name);
    const std::string folder = info ? info->folder : name;
    if (std::find(all.begin(), all.end(), folder) == all.end())
      fail("data fetch --only: unknown dataset or folder '{}'; folders: {}", name, fmt::join(all, ", "));
    wanted.push_back(folder);
  }
  std::vector<std::string> selected;
  for (const auto& folder : all)
    if (std::find(wanted.begin(), wanted.end(), folder) != wanted.end()) selected.push_back(folder);
  return selected;
}

std::string mirrored(const std::string& url, const std::string& mirror) {
  if (mirror.empty()) return url;
  const std::string prefix = kGithubRawPrefix;
  if (url.rfind(prefix, 0) != 0) return url;
  return mirror + (mirror.back() == '/' ? "" : "/") + url.substr(prefix.size());
}

// "https://host[:port]" and "/path" of a URL.
std::pair<std::string, std::string> split_url(const std::string& url) {
  const size_t scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string::npos ? "" : url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") fail("data fetch: '{}' is not an http:// or https:// URL", url);
  const size_t slash = url.find('/', scheme_end + 3);
  if (slash == std::string::npos) return {url, "/"};
  return {url.substr(0, slash), url.substr(slash)};
}

std::string human_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < 1024 * 1024) return fmt::format("{:.1f} KB", bytes / 1024.0);
  return fmt::format("{:.1f} MB", bytes / (1024.0 * 1024.0));
}

// Downloads one file through <target>.part; returns "" on success, else the reason (the .part file is removed).
// `connect_error` is set when the host could not be reached at all.
std::string download(httplib::Client& client, const std::string& url, const std::string& path,
                     const DataSource& source, const fs::path& target, bool& connect_error) {
  const fs::path part = target.string() + ".part";
  std::ofstream out(part, std::ios::binary | std::ios::trunc);
  if (!out) return fmt::format("cannot write {}", part.string());
  Sha256 hash;
  uint64_t received = 0;
  int status = 0;
  httplib::Result result = client.Get(
      path,
      [&](const httplib::Response& response) {
        status = response.status;
        return response.status == 200;  // an error page must not be written as data
      },
      [&](const char* data, size_t n) {
        received += n;
        if (received > source.size) return false;  // never stream more than the manifest promises
        out.write(data, static_cast<std::streamsize>(n));
        hash.update(data, n);
        return static_cast<bool>(out);
      });
  out.close();
  std::string error;
  if (status != 0 && status != 200) {
    error = fmt::format("HTTP {} for {}", status, url);
  } else if (!result && status == 0) {
    connect_error = true;
    error = fmt::format("cannot connect to {} ({} error); check the network or use --mirror", split_url(url).first,
                        httplib::to_string(result.error()));
  } else if (received > source.size) {
    error = fmt::format("{}: server sent more than the expected {} bytes", source.path, source.size);
  } else if (!result) {
    error = fmt::format("download of {} interrupted after {} bytes ({})", url, received, httplib::to_string(result.error()));
  } else if (!out) {
    error = fmt::format("cannot write {}", part.string());
  } else if (received != source.size) {
    error = fmt::format("{}: size mismatch: expected {} bytes, got {} (downloaded file removed)", source.path,
                        source.size, received);
  } else if (const std::string got = hash.hex(); got != source.sha256) {
    error = fmt::format("{}: sha256 mismatch: expected {}, got {} (downloaded file removed)", source.path,
                        source.sha256, got);
  }
  std::error_code ignored;
  if (!error.empty()) {
    fs::remove(part, ignored);
    return error;
  }
  fs::rename(part, target, ignored);
  if (ignored) return fmt::format("cannot rename {} into place: {}", part.string(), ignored.message());
  return "";
}

}  // namespace

std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read {}", path.string());
  Sha256 hash;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) hash.update(buffer, static_cast<size_t>(in.gcount()));
  if (in.bad()) fail("cannot read {}", path.string());
  return hash.hex();
}

FetchSummary fetch_data(const FetchOptions& options, std::FILE* log) {
  FetchSummary summary;
  summary.folders = select_folders(options.only);
  if (!options.mirror.empty()) split_url(options.mirror);  // a bad --mirror fails before any work
  std::vector<const DataSource*> todo;
  for (const auto& source : data_sources())
    if (std::find(summary.folders.begin(), summary.folders.end(), folder_of(source)) != summary.folders.end())
      todo.push_back(&source);
  fmt::print(log, "fetching {} files into {}\n", todo.size(), options.out.string());

  std::map<std::string, std::unique_ptr<httplib::Client>> clients;  // one keep-alive connection per host
  std::map<std::string, std::string> unreachable;                   // host -> first error: later files skip it
  for (size_t i = 0; i < todo.size(); ++i) {
    const DataSource& source = *todo[i];
    const fs::path target = options.out / source.path;
    const std::string label = fmt::format("[{:>2}/{}] {} ({})", i + 1, todo.size(), source.path, human_size(source.size));
    std::error_code ec;
    const bool exists = fs::is_regular_file(target, ec);
    if (!options.force && exists && fs::file_size(target, ec) == source.size && sha256_file(target) == source.sha256) {
      ++summary.present;
      fmt::print(log, "{} already present\n", label);
      std::fflush(log);
      continue;
    }
    const std::string url = mirrored(source.url, options.mirror);
    const auto [host, path] = split_url(url);
    std::string error;
    if (auto dead = unreachable.find(host); dead != unreachable.end()) {
      error = "skipped: " + dead->second;
    } else {
      fs::create_directories(target.parent_path(), ec);
      if (ec) fail("cannot create {}: {}", target.parent_path().string(), ec.message());
      auto& client = clients[host];
      if (!client) {
        client = std::make_unique<httplib::Client>(host);
        client->set_connection_timeout(10);
        client->set_read_timeout(options.timeout_s);
        client->set_follow_location(true);
        client->set_keep_alive(true);
      }
      bool connect_error = false;
      error = download(*client, url, path, source, target, connect_error);
      if (connect_error) unreachable[host] = error;
    }
    if (error.empty()) {
      ++summary.downloaded;
      fmt::print(log, "{} downloaded{}\n", label,
                 exists && !options.force ? " (replaced a copy whose sha256 differed)" : "");
    } else {
      ++summary.failed;
      fmt::print(log, "{} FAILED: {}\n", label, error);
    }
    std::fflush(log);
  }
  return summary;
}

}  // namespace guardkit::eval
