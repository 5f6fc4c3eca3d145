// oboro's own endpoints: asynchronous jobs (submit → 202, poll, cancel, Server-Sent Events), history, written
// images, /health, /metrics, and the web UI's static files.
#include "core/error.h"
#include "flow/memory_plan.h"
#include "io/safetensors.h"
#include "serve/server_internal.h"
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace oboro::serve {

using nlohmann::json;

namespace {

const char* kJobId = "([0-9a-f]{16})";

bool finished(const json& s) {
  const std::string st = s["status"];
  return st == "completed" || st == "failed" || st == "cancelled";
}

std::shared_ptr<Job> job_or_404(Context& cx, const httplib::Request& req) {
  auto job = cx.queue->find(req.matches[1]);
  if (!job) throw RequestError(404, "", "no job " + std::string(req.matches[1]) + " (finished jobs are kept for a while; "
                                            "GET /oboro/v1/history lists every image)");
  return job;
}

size_t param_size(const httplib::Request& req, const char* name, size_t def, size_t max) {
  if (!req.has_param(name)) return def;
  const std::string v = req.get_param_value(name);
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end || v[0] == '-') throw RequestError(422, name, std::string(name) + ": must be a non-negative integer");
  return (size_t)std::min<unsigned long long>(x, max);
}

// One SSE stream: the job's state now, then one event per change (progress with a preview when there is a new one),
// `done` when it finishes; a comment every 15 s keeps idle connections open.
void job_events(Context& cx, std::shared_ptr<Job> job, httplib::Response& res) {
  struct State {
    bool first = true, done = false;
    uint64_t seen = 0;
    int preview_no = 0;
  };
  auto st = std::make_shared<State>();
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider("text/event-stream", [&cx, job, st](size_t, httplib::DataSink& sink) {
    if (st->done) {
      sink.done();
      return true;
    }
    if (!st->first) {
      const uint64_t v = cx.queue->wait(*job, st->seen, 15.0);
      if (v == st->seen && !cx.queue->stopping()) {
        const char* ping = ": ping\n\n";
        return sink.write(ping, 8);
      }
    }
    st->first = false;
    json s = cx.queue->snapshot(*job, true);
    st->seen = s["version"];
    const int pno = s["preview_no"];
    if (pno == st->preview_no) s.erase("preview");
    st->preview_no = pno;
    const bool fin = finished(s);
    const std::string name = fin ? "done" : s["status"] == "running" ? "progress" : "status";
    const std::string msg = "event: " + name + "\ndata: " + s.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
    if (!sink.write(msg.data(), msg.size())) return false;
    if (fin || cx.queue->stopping()) st->done = true;
    return true;
  });
}

std::string metrics_text(Context& cx) {
  const QueueStats s = cx.queue->stats();
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& body) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << body;
  };
  auto line = [](const std::string& name, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g\n", v);
    return name + buf;
  };
  metric("oboro_queue_length", "gauge", "Jobs waiting to run (the running one not included).", line("oboro_queue_length", (double)s.queued));
  metric("oboro_job_running", "gauge", "1 while a job runs.", line("oboro_job_running", s.running ? 1 : 0));
  metric("oboro_jobs_total", "counter", "Finished jobs by status, and jobs refused because the queue was full.",
         line("oboro_jobs_total{status=\"completed\"}", (double)s.completed) +
             line("oboro_jobs_total{status=\"failed\"}", (double)s.failed) +
             line("oboro_jobs_total{status=\"cancelled\"}", (double)s.cancelled) +
             line("oboro_jobs_total{status=\"rejected\"}", (double)s.rejected));
  metric("oboro_jobs_submitted_total", "counter", "Jobs accepted into the queue.", line("oboro_jobs_submitted_total", (double)s.submitted));
  metric("oboro_images_total", "counter", "Images generated and written.", line("oboro_images_total", (double)s.images));
  metric("oboro_seconds_per_image", "gauge", "Mean generation seconds per image over the completed jobs.",
         line("oboro_seconds_per_image", s.images ? s.image_seconds / (double)s.images : 0.0));
  metric("oboro_resident_memory_bytes", "gauge", "Resident set size of the process.", line("oboro_resident_memory_bytes", (double)current_rss_bytes()));
  metric("oboro_peak_resident_memory_bytes", "gauge", "Peak resident set size of the process.",
         line("oboro_peak_resident_memory_bytes", (double)peak_rss_bytes()));
  metric("oboro_model_resident_bytes", "gauge", "Memory held by the models kept loaded between jobs (approximate).",
         line("oboro_model_resident_bytes", (double)cx.resident_bytes.load()));
  metric("oboro_history_images", "gauge", "Images listed by the history.", line("oboro_history_images", (double)cx.outputs.size()));
  metric("oboro_uptime_seconds", "gauge", "Seconds since the server started.", line("oboro_uptime_seconds", unix_now() - cx.started));
  return o.str();
}

const char* content_type(const std::string& path) {
  auto ends = [&](const char* e) { return path.size() >= strlen(e) && path.compare(path.size() - strlen(e), strlen(e), e) == 0; };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "application/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  return "application/octet-stream";
}

void serve_ui_file(Context& cx, const std::string& path, httplib::Response& res) {
  const std::string p = path == "/" ? "/index.html" : path;
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    if (p != kWebAssets[i].path) continue;
    std::string body((const char*)kWebAssets[i].data, kWebAssets[i].size);
    if (!cx.opt.web_dir.empty()) {  // development: the files on disk (only names that are built in)
      std::ifstream in(cx.opt.web_dir + p, std::ios::binary);
      if (in) body.assign(std::istreambuf_iterator<char>(in), {});
    }
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; style-src 'self'; "
                   "script-src 'self'; frame-ancestors 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Cache-Control", "no-cache");
    res.set_content(body, content_type(p));
    return;
  }
  send_error(res, 404, "", "no such file: " + path);
}

// Defaults the UI needs: limits, the current model's training size.
json ui_info(Context& cx) {
  const ModelEntry m = cx.models.current();
  std::string res = "64x64";
  try {
    const auto src = TensorSource::open(m.path);
    auto it = src.metadata().find("modelspec.resolution");
    if (it != src.metadata().end()) res = it->second;
  } catch (const Error&) {
  }
  const Limits& l = cx.opt.limits;
  return {{"version", "oboro 0.1.0"}, {"model", m.name}, {"resolution", res},
          {"limits", {{"max_side", l.max_side}, {"max_steps", l.max_steps}, {"max_batch", l.max_batch},
                      {"max_n_iter", l.max_n_iter}, {"max_images", l.max_images}}},
          {"defaults", {{"steps", GenerateRequest{}.steps}, {"cfg_scale", GenerateRequest{}.cfg_scale}}},
          {"max_queue", cx.opt.max_queue}, {"auth", !cx.opt.api_key.empty()}};
}

}  // namespace

void register_job_routes(httplib::Server& svr, Context& cx) {
  const std::string jobs = "/oboro/v1/jobs";
  svr.Post(jobs, guard([&cx](const httplib::Request& req, httplib::Response& res) {
    ParsedRequest p = parse_a1111(parse_body(req.body), cx.opt.limits, false);
    const std::string kind = p.img2img ? "img2img" : "txt2img";
    auto job = make_job(cx, std::move(p), kind);
    if (!submit(cx, job, res)) return;
    json s = cx.queue->snapshot(*job);
    s["url"] = "/oboro/v1/jobs/" + job->id;
    s["events"] = "/oboro/v1/jobs/" + job->id + "/events";
    res.set_header("Location", s["url"].get<std::string>());
    send_json(res, 202, s);
  }));
  svr.Get(jobs, guard([&cx](const auto&, auto& res) {
    json list = json::array();
    for (const auto& j : cx.queue->active()) list.push_back(cx.queue->snapshot(*j));
    send_json(res, 200, {{"jobs", list}});
  }));
  svr.Get(jobs + "/" + kJobId, guard([&cx](const httplib::Request& req, auto& res) {
    auto job = job_or_404(cx, req);
    send_json(res, 200, cx.queue->snapshot(*job, req.get_param_value("preview") == "1"));
  }));
  svr.Post(jobs + "/" + kJobId + "/cancel", guard([&cx](const httplib::Request& req, auto& res) {
    auto job = job_or_404(cx, req);
    const auto r = cx.queue->cancel(job->id);
    json s = cx.queue->snapshot(*job);
    if (r == JobQueue::CancelResult::AlreadyFinished) {
      s["error"] = "the job has already finished";
      send_json(res, 409, s);
      return;
    }
    s["cancel"] = r == JobQueue::CancelResult::Removed ? "removed from the queue" : "stopping at the next step";
    send_json(res, 200, s);
  }));
  svr.Get(jobs + "/" + kJobId + "/events", guard([&cx](const httplib::Request& req, httplib::Response& res) {
    job_events(cx, job_or_404(cx, req), res);
  }));
  svr.Get("/oboro/v1/history", guard([&cx](const httplib::Request& req, auto& res) {
    send_json(res, 200, cx.outputs.history(param_size(req, "offset", 0, 1u << 30), param_size(req, "limit", 50, 500)));
  }));
  svr.Get(R"(/oboro/v1/images/(\d{4}-\d{2}-\d{2}/\d{1,9}-\d{1,20}\.png))", guard([&cx](const httplib::Request& req, auto& res) {
    const std::string path = cx.outputs.path_of(req.matches[1]);
    if (path.empty()) throw RequestError(404, "", "no such image");
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    res.set_header("Cache-Control", "private, max-age=86400");
    res.set_content(bytes, "image/png");
  }));
  svr.Get("/oboro/v1/info", guard([&cx](const auto&, auto& res) { send_json(res, 200, ui_info(cx)); }));
  svr.Get("/health", guard([&cx](const auto&, auto& res) {
    const QueueStats s = cx.queue->stats();
    send_json(res, cx.queue->stopping() ? 503 : 200,
              {{"status", cx.queue->stopping() ? "stopping" : "ok"}, {"version", "oboro 0.1.0"},
               {"uptime_s", unix_now() - cx.started}, {"queue_length", s.queued}, {"running", s.running}});
  }));
  svr.Get("/metrics", guard([&cx](const auto&, auto& res) {
    res.set_content(metrics_text(cx), "text/plain; version=0.0.4; charset=utf-8");
  }));
  svr.Get(R"(/|/[a-z0-9_-]+\.(html|js|css|svg|png))", [&cx](const httplib::Request& req, httplib::Response& res) {
    serve_ui_file(cx, req.path, res);
  });
}

}  // namespace oboro::serve
