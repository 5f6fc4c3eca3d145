#include "serve/outputs.h"
#include "core/error.h"
#include "flow/infotext.h"
#include "io/image.h"
#include "serve/jobs.h"
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

namespace oboro::serve {

namespace fs = std::filesystem;
using nlohmann::json;

bool valid_output_name(const std::string& rel) {
  static const std::regex re(R"(\d{4}-\d{2}-\d{2}/\d{1,9}-\d{1,20}\.png)");
  return rel.size() < 64 && std::regex_match(rel, re);
}

namespace {

std::string today() {
  std::time_t now = std::time(nullptr);
  char day[16];
  std::strftime(day, sizeof day, "%Y-%m-%d", std::localtime(&now));
  return day;
}

int next_index(const fs::path& dir) {
  int best = -1;
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    for (auto& e : fs::directory_iterator(dir, ec)) {
      int n;
      if (std::sscanf(e.path().filename().string().c_str(), "%d-", &n) == 1) best = std::max(best, n);
    }
  return best + 1;
}

// Sort key of a file name: (day, index).
std::pair<std::string, long long> order_of(const std::string& rel) {
  const auto slash = rel.find('/');
  return {rel.substr(0, slash), std::atoll(rel.c_str() + slash + 1)};
}

void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot open the history index for appending: check the permissions of the outputs folder");
  const std::string l = line + "\n";
  const ssize_t n = ::write(fd, l.data(), l.size());
  ::fsync(fd);
  ::close(fd);
  if (n != (ssize_t)l.size()) fail(path, ": could not append to the history index (disk full?)");
}

}  // namespace

OutputStore::OutputStore(std::string root) : root_(std::move(root)) {
  std::error_code ec;
  fs::create_directories(root_, ec);
  if (!fs::is_directory(root_)) fail(root_, ": cannot create the outputs folder (--outputs)");
  load();
}

json OutputStore::record_from_png(const std::string& rel) const {
  json r = {{"file", rel}};
  const TextChunks text = read_png_text((fs::path(root_) / rel).string());
  for (const auto& [k, v] : text) {
    if (k == "oboro_request") {
      try {
        json q = json::parse(v);
        if (q.is_object()) r.update(q);
      } catch (const json::exception&) {
      }
    } else if (k == "parameters") {
      r["infotext"] = v;
    }
  }
  if (!r.contains("prompt") && r.contains("infotext")) {
    const Infotext it = parse_infotext(r["infotext"].get<std::string>());
    r["prompt"] = it.prompt;
    r["negative_prompt"] = it.negative;
  }
  std::error_code ec;
  const auto t = fs::last_write_time(fs::path(root_) / rel, ec);
  if (!ec)
    r["created"] = (double)std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::file_clock::to_sys(t).time_since_epoch()).count();
  return r;
}

void OutputStore::load() {
  std::set<std::string> known;
  std::vector<json> items;
  std::ifstream in(fs::path(root_) / "history.jsonl");
  for (std::string line; std::getline(in, line);) {
    json r;
    try {
      r = json::parse(line);
    } catch (const json::exception&) {
      continue;  // a torn last line
    }
    if (!r.is_object() || !r.contains("file") || !r["file"].is_string()) continue;
    const std::string rel = r["file"];
    if (!valid_output_name(rel) || known.count(rel) || !fs::is_regular_file(fs::path(root_) / rel)) continue;
    known.insert(rel);
    items.push_back(std::move(r));
  }
  std::error_code ec;
  for (auto& day : fs::directory_iterator(root_, ec)) {
    if (!day.is_directory()) continue;
    for (auto& f : fs::directory_iterator(day.path(), ec)) {
      const std::string rel = day.path().filename().string() + "/" + f.path().filename().string();
      if (!valid_output_name(rel) || known.count(rel)) continue;
      try {
        items.push_back(record_from_png(rel));
        known.insert(rel);
      } catch (const Error&) {
        // not a readable PNG: not part of the history
      }
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const json& a, const json& b) { return order_of(a["file"]) < order_of(b["file"]); });
  for (auto& r : items) r["url"] = "/oboro/v1/images/" + r["file"].get<std::string>();
  items_ = std::move(items);
}

std::string OutputStore::save(const GeneratedImage& g, const json& extra) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string day = today();
  const fs::path dir = fs::path(root_) / day;
  fs::create_directories(dir);
  if (day != day_) {
    day_ = day;
    next_ = next_index(dir);
  }
  char name[64];
  do {  // `oboro generate` may write into the same folder
    std::snprintf(name, sizeof name, "%05d-%llu.png", next_++, (unsigned long long)g.seed);
  } while (fs::exists(dir / name));
  const std::string rel = day + "/" + name;
  save_png((dir / name).string(), g.image, {{"parameters", g.infotext}, {"oboro_request", g.request_json}});
  json r = {{"file", rel}};
  try {
    json q = json::parse(g.request_json);
    if (q.is_object()) r.update(q);
  } catch (const json::exception&) {
  }
  r["infotext"] = g.infotext;
  r["created"] = unix_now();
  r.update(extra);
  append_line((fs::path(root_) / "history.jsonl").string(), r.dump());
  r["url"] = "/oboro/v1/images/" + rel;
  items_.push_back(std::move(r));
  return rel;
}

json OutputStore::history(size_t offset, size_t limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  json items = json::array();
  const size_t n = items_.size();
  for (size_t i = offset; i < n && items.size() < limit; ++i) items.push_back(items_[n - 1 - i]);
  return {{"total", n}, {"offset", offset}, {"items", items}};
}

std::string OutputStore::path_of(const std::string& rel) const {
  if (!valid_output_name(rel)) return "";
  const fs::path p = fs::path(root_) / rel;
  return fs::is_regular_file(p) ? p.string() : "";
}

size_t OutputStore::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return items_.size();
}

}  // namespace oboro::serve
