#include "train/notify.h"
#include <httplib.h>
#include <cstdio>
#include <ctime>

namespace oboro {

namespace {

// "http://host:port/path" → ("http://host:port", "/path"); false when it is not an http(s) URL.
bool split_url(const std::string& url, std::string& origin, std::string& path) {
  const size_t s = url.find("://");
  if (s == std::string::npos || (url.compare(0, s, "http") != 0 && url.compare(0, s, "https") != 0)) return false;
  const size_t p = url.find('/', s + 3);
  origin = url.substr(0, p);
  path = p == std::string::npos ? "/" : url.substr(p);
  return origin.size() > s + 3;
}

// "" on success, else why it failed.
std::string post(const std::string& url, const std::string& body) {
  std::string origin, path;
  if (!split_url(url, origin, path)) return "not an http:// or https:// URL";
  try {
    httplib::Client cli(origin);
    cli.set_connection_timeout(2, 0);
    cli.set_read_timeout(3, 0);
    cli.set_write_timeout(3, 0);
    auto res = cli.Post(path, body, "application/json");
    if (!res) return httplib::to_string(res.error());
    if (res->status < 200 || res->status >= 300) return "HTTP " + std::to_string(res->status);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

nlohmann::json body_of(const std::string& event, nlohmann::json fields) {
  if (!fields.is_object()) fields = nlohmann::json::object();
  fields["event"] = event;
  fields["time"] = (int64_t)std::time(nullptr);
  return fields;
}

}  // namespace

void Notifier::send(const std::string& event, nlohmann::json fields) {
  if (url_.empty()) return;
  const std::string err = post(url_, body_of(event, std::move(fields)).dump());
  if (err.empty()) return;
  if (failures_++ == 0)
    std::fprintf(stderr, "warning: notification '%s' to %s failed (%s); training goes on (later failures are only "
                 "counted)\n", event.c_str(), url_.c_str(), err.c_str());
}

void notify_event(const std::string& url, const std::string& event, const nlohmann::json& fields) {
  if (url.empty()) return;
  const std::string err = post(url, body_of(event, fields).dump());
  if (!err.empty())
    std::fprintf(stderr, "warning: notification '%s' to %s failed (%s)\n", event.c_str(), url.c_str(), err.c_str());
}

}  // namespace oboro
