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
#include <tuple>

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

// (day YYYYMMDD, index NNNNN) of a valid output name.
std::pair<int32_t, int32_t> key_of(const std::string& rel) {
  const int32_t day = std::atoi(rel.c_str()) * 10000 + std::atoi(rel.c_str() + 5) * 100 + std::atoi(rel.c_str() + 8);
  return {day, (int32_t)std::atoll(rel.c_str() + rel.find('/') + 1)};
}

// Appends `line` and a newline to the index in one write, then fsyncs; returns the line's byte offset. A torn
// last line (a crash or a full disk during an earlier append) is ended first, so the new line stands alone.
uint64_t append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, ": cannot open the history index for appending: check the permissions of the outputs folder");
  const off_t size = ::lseek(fd, 0, SEEK_END);
  char last = '\n';
  if (size > 0 && ::pread(fd, &last, 1, size - 1) != 1) last = '\n';
  std::string l;
  l.reserve(line.size() + 2);
  if (last != '\n') l += '\n';
  l += line;
  l += '\n';
  const ssize_t n = ::write(fd, l.data(), l.size());
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (n != (ssize_t)l.size() || !synced) fail(path, ": could not append to the history index (disk full?)");
  return (uint64_t)size + (last == '\n' ? 0 : 1);
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

std::string OutputStore::index_path() const { return (fs::path(root_) / "history.jsonl").string(); }

void OutputStore::load() {
  std::set<std::string> known;
  std::vector<Entry> items;
  std::ifstream in(index_path(), std::ios::binary);
  uint64_t offset = 0;
  for (std::string line; std::getline(in, line); offset += line.size() + 1) {
    json r;
    try {
      r = json::parse(line);
    } catch (const json::exception&) {
      continue;  // a torn line
    }
    if (!r.is_object() || !r.contains("file") || !r["file"].is_string()) continue;
    const std::string rel = r["file"];
    if (!valid_output_name(rel) || known.count(rel) || !fs::is_regular_file(fs::path(root_) / rel)) continue;
    known.insert(rel);
    const auto [day, index] = key_of(rel);
    items.push_back({day, index, offset, (uint32_t)line.size(), false});
  }
  std::error_code ec;
  for (auto& day : fs::directory_iterator(root_, ec)) {
    if (!day.is_directory()) continue;
    for (auto& f : fs::directory_iterator(day.path(), ec)) {
      const std::string rel = day.path().filename().string() + "/" + f.path().filename().string();
      if (!valid_output_name(rel) || known.count(rel)) continue;
      try {
        recovered_.push_back(record_from_png(rel).dump());
        known.insert(rel);
        const auto [d, index] = key_of(rel);
        items.push_back({d, index, recovered_.size() - 1, 0, true});
      } catch (const Error&) {
        // not a readable PNG: not part of the history
      }
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Entry& a, const Entry& b) { return std::tie(a.day, a.index) < std::tie(b.day, b.index); });
  items_ = std::move(items);
}

json OutputStore::record_of(const Entry& e, int fd) const {
  std::string text;
  if (e.recovered) {
    text = recovered_[e.offset];
  } else {
    text.resize(e.length);
    if (fd < 0 || ::pread(fd, text.data(), e.length, (off_t)e.offset) != (ssize_t)e.length) return json();
  }
  json r = json::parse(text, nullptr, false);
  if (!r.is_object() || !r.contains("file") || !r["file"].is_string()) return json();  // the index was changed
  r["url"] = "/oboro/v1/images/" + r["file"].get<std::string>();
  return r;
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
  if (extra.is_object()) r.update(extra);
  const std::string line = r.dump();
  const uint64_t offset = append_line(index_path(), line);
  const auto [d, index] = key_of(rel);
  items_.push_back({d, index, offset, (uint32_t)line.size(), false});
  return rel;
}

json OutputStore::history(size_t offset, size_t limit) const {
  std::lock_guard<std::mutex> lock(mu_);
  json items = json::array();
  const size_t n = items_.size();
  const int fd = ::open(index_path().c_str(), O_RDONLY | O_CLOEXEC);
  for (size_t i = offset; i < n && items.size() < limit; ++i) {
    json r = record_of(items_[n - 1 - i], fd);
    if (r.is_object()) items.push_back(std::move(r));
  }
  if (fd >= 0) ::close(fd);
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
