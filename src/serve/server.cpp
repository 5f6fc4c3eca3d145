// `oboro serve`: the server's set-up (limits, authentication, CORS / Origin checks, signals) and the helpers the
// route files share. The routes themselves are in routes_a1111.cpp and routes_jobs.cpp.
#include "core/base64.h"
#include "core/error.h"
#include "flow/lora_apply.h"
#include "flow/memory_plan.h"
#include "models/codec.h"
#include "serve/connection.h"
#include "serve/server_internal.h"
#include "io/file_hash.h"
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

namespace oboro::serve {

using nlohmann::json;

Context::Context(const ServeOptions& o, Backend& b) : opt(o), be(b), models(o.model, o.models_dir), outputs(o.outputs) {}

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& field, const std::string& msg, bool openai) {
  if (openai) {
    send_json(res, status, {{"error", {{"message", msg}, {"type", status >= 500 ? "server_error" : "invalid_request_error"},
                                       {"param", field.empty() ? json(nullptr) : json(field)}, {"code", status}}}});
    return;
  }
  json j = {{"error", msg}};
  if (!field.empty()) {
    j["field"] = field;
    j["detail"] = json::array({{{"loc", {"body", field}}, {"msg", msg}, {"type", "value_error"}}});
  } else {
    j["detail"] = msg;
  }
  send_json(res, status, j);
}

httplib::Server::Handler guard(std::function<void(const httplib::Request&, httplib::Response&)> fn, bool openai) {
  return [fn = std::move(fn), openai](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const RequestError& e) {
      send_error(res, e.status, e.field, e.what(), openai);
    } catch (const Error& e) {
      send_error(res, 422, "", e.what(), openai);
    } catch (const std::bad_alloc&) {
      send_error(res, 503, "", "out of memory", openai);
    } catch (const std::exception& e) {
      send_error(res, 500, "", std::string("internal error: ") + e.what(), openai);
    }
  };
}

std::shared_ptr<Job> make_job(Context& cx, ParsedRequest&& p, const std::string& kind) {
  const ModelEntry m = p.model.empty() ? cx.models.current() : cx.models.find(p.model);
  auto job = std::make_shared<Job>();
  job->kind = kind;
  job->model = m.name;
  job->parameters = std::move(p.parameters);
  GenerateRequest& rq = job->rq;
  rq = std::move(p.rq);
  rq.model = m.path;
  rq.models_dir = cx.opt.models_dir;
  rq.text_encoder = cx.opt.text_encoder;
  rq.vae = cx.opt.vae;
  rq.max_memory = cx.opt.max_memory;
  // <lora:NAME:W> tags in the prompt: found and checked against the model now, so a bad one is a 422 naming it.
  rq.lora_dir = lora_dir_or_default(cx.opt.lora_dir, cx.opt.models_dir);
  try {
    std::vector<LoraRequest> tags;
    strip_prompt_loras(rq.prompt, tags);
    read_lora_set(tags, rq.lora_dir, rq.model);
  } catch (const Error& e) {
    throw RequestError(422, "prompt", e.what());
  }
  // Size: a multiple of the model's granularity (codec stride × patch size).
  const DiTConfig cfg = dit_config_of(rq.model);
  const int g = cfg.patch_size * (cfg.codec == "flux-vae" ? 8 : codec_stride(cfg.codec, cfg.latent_channels));
  if (rq.width % g) throw RequestError(422, "width", str("width: must be a multiple of ", g, " for model ", m.name, ", got ", rq.width));
  if (rq.height % g) throw RequestError(422, "height", str("height: must be a multiple of ", g, " for model ", m.name, ", got ", rq.height));
  if (rq.width > 0 && rq.width < g) throw RequestError(422, "width", str("width: must be at least ", g));
  if (rq.height > 0 && rq.height < g) throw RequestError(422, "height", str("height: must be at least ", g));
  // The memory plan (what is already resident is not counted twice).
  MemoryPlan plan;
  try {
    plan = plan_generation(rq);
  } catch (const Error& e) {
    throw RequestError(422, "", e.what());
  }
  plan.baseline -= std::min(plan.baseline, cx.resident_bytes.load());
  if (!plan.fits())
    throw RequestError(422, rq.img2img() ? "init_images" : "width",
                       "the request does not fit in memory: " + plan.refusal() +
                           " (ask for a smaller width/height or batch_size)");
  return job;
}

bool submit(Context& cx, const std::shared_ptr<Job>& job, httplib::Response& res, bool openai) {
  if (cx.queue->submit(job)) return true;
  res.set_header("Retry-After", std::to_string(cx.queue->retry_after()));
  if (cx.queue->stopping()) send_error(res, 503, "", "the server is shutting down", openai);
  else send_error(res, 429, "", str("the queue is full (", cx.opt.max_queue, " jobs waiting): retry later"), openai);
  return false;
}

bool wait_sync(Context& cx, const httplib::Request& req, Job& job) {
  const int fd = find_connection_fd(req.remote_addr, req.remote_port, req.local_port);
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t seen = 0;
  for (;;) {
    seen = cx.queue->wait(job, seen, 0.2);
    const json s = cx.queue->snapshot(job);
    const std::string st = s["status"];
    if (st == "completed" || st == "failed" || st == "cancelled") return true;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (peer_closed(fd) || waited > cx.opt.sync_timeout_s) {
      cx.queue->cancel(job.id);
      return false;
    }
  }
}

std::string image_b64(Context& cx, const std::string& file) {
  const std::string path = cx.outputs.path_of(file);
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return base64_encode(ss.str());
}

namespace {

// The worker's runner: generate with the hooks (progress, cancel, the resident models), then write every image
// with its infotext before the job is reported completed.
std::vector<ResultImage> run_job(Context& cx, Job& job, const std::function<void(const StepEvent&)>& on_step) {
  GenerateHooks hooks;
  hooks.on_step = on_step;
  hooks.cancel = &job.cancel;
  hooks.cache = &cx.cache;
  std::vector<GeneratedImage> images = generate(cx.be, job.rq, false, nullptr, &hooks);
  const size_t rss = current_rss_bytes();
  cx.resident_bytes = cx.cache.resident && rss > cx.rss_start ? rss - cx.rss_start : 0;
  if (job.cancel) throw Cancelled();
  std::vector<ResultImage> out;
  for (const auto& g : images) {
    const std::string file = cx.outputs.save(g, {{"job_id", job.id}, {"kind", job.kind}});
    out.push_back({file, g.seed, g.infotext});
  }
  return out;
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

bool is_ui_file(const std::string& path) {
  if (path == "/" || path == "/favicon.ico") return true;
  for (size_t i = 0; i < kWebAssetCount; ++i)
    if (path == kWebAssets[i].path) return true;
  return false;
}

bool same_secret(const std::string& a, const std::string& b) {
  unsigned char d = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) d |= (unsigned char)(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return d == 0;
}

// The host name of a Host header ("localhost:7860" → "localhost", "[::1]:7860" → "::1").
std::string host_name(const std::string& host) {
  if (!host.empty() && host[0] == '[') return host.substr(1, host.find(']') - 1);
  return host.substr(0, host.find(':'));
}

// Host check (DNS rebinding), Origin check, CORS headers, preflight, and the API key.
httplib::Server::HandlerResponse pre_route(const Context& cx, const httplib::Request& req, httplib::Response& res) {
  const ServeOptions& o = cx.opt;
  if (is_loopback(o.host) && !is_loopback(host_name(req.get_header_value("Host")))) {
    // A loopback server answers loopback names only: a web page whose name resolves to 127.0.0.1 cannot use it.
    send_error(res, 403, "", "Host '" + req.get_header_value("Host") + "' refused: this server listens on " + o.host +
                                 " and answers requests for localhost / 127.0.0.1 / [::1] only");
    return httplib::Server::HandlerResponse::Handled;
  }
  const std::string origin = req.get_header_value("Origin");
  if (!origin.empty() && origin != "http://" + req.get_header_value("Host")) {
    const bool allowed = !o.cors.empty() && (o.cors == "*" || o.cors == origin);
    if (!allowed) {
      send_error(res, 403, "", "cross-origin request from " + origin +
                                   " refused: start the server with --cors ORIGIN to allow a web page on another origin");
      return httplib::Server::HandlerResponse::Handled;
    }
    res.set_header("Access-Control-Allow-Origin", o.cors == "*" ? "*" : origin);
    res.set_header("Vary", "Origin");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Max-Age", "600");
  }
  if (req.method == "OPTIONS") {
    res.status = 204;
    return httplib::Server::HandlerResponse::Handled;
  }
  if (!o.api_key.empty() && req.path != "/health" && !is_ui_file(req.path)) {
    const std::string auth = req.get_header_value("Authorization");
    if (auth.rfind("Bearer ", 0) != 0 || !same_secret(auth.substr(7), o.api_key)) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "", "missing or wrong API key: send 'Authorization: Bearer <key>' (oboro serve --api-key)");
      return httplib::Server::HandlerResponse::Handled;
    }
  }
  return httplib::Server::HandlerResponse::Unhandled;
}

int g_signal_fd = -1;
extern "C" void on_signal(int) {
  const uint64_t one = 1;
  if (g_signal_fd >= 0) (void)!::write(g_signal_fd, &one, sizeof one);
}

}  // namespace

int run_server(const ServeOptions& opt, Backend& be) {
  Context cx(opt, be);
  cx.started = unix_now();
  ModelCatalog::hash10(opt.model);  // hashed once here, not by two threads at once later
  cx.rss_start = current_rss_bytes();
  cx.queue = std::make_unique<JobQueue>(
      [&cx](Job& job, const std::function<void(const StepEvent&)>& on_step) { return run_job(cx, job, on_step); },
      opt.max_queue, opt.keep_jobs > 0 ? opt.keep_jobs : std::max<size_t>(4096, 4 * opt.max_queue), opt.preview_every);

  httplib::Server svr;
  const int threads = std::max(4, opt.http_threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr.set_payload_max_length(opt.max_body);
  svr.set_read_timeout(opt.timeout_s, 0);
  svr.set_write_timeout(opt.timeout_s, 0);
  svr.set_keep_alive_timeout(5);
  svr.set_pre_routing_handler([&cx](const httplib::Request& req, httplib::Response& res) { return pre_route(cx, req, res); });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.status == 204) return httplib::Server::HandlerResponse::Unhandled;
    if (res.status == 413) send_error(res, 413, "", "the request body is too large (oboro serve --max-body)");
    else if (res.status == 404) send_error(res, 404, "", "no such endpoint: " + req.method + " " + req.path);
    else send_error(res, res.status, "", "request refused");
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, 500, "", "internal error");
  });
  register_a1111_routes(svr, cx);
  register_job_routes(svr, cx);

  const int port = opt.port == 0 ? svr.bind_to_any_port(opt.host) : (svr.bind_to_port(opt.host, opt.port) ? opt.port : -1);
  if (port <= 0)
    fail("cannot listen on ", opt.host, ":", opt.port, ": the port is in use or the address is not local (--host/--port)");
  widen_listen_backlog(port, SOMAXCONN);  // a burst of clients must queue, not be reset
  if (!is_loopback(opt.host) && opt.api_key.empty())
    std::fprintf(stderr, "warning: listening on %s without --api-key: anyone who can reach this address can generate "
                         "images and read the history; pass --api-key KEY (clients send 'Authorization: Bearer KEY')\n",
                 opt.host.c_str());
  if (!opt.quiet)
    std::fprintf(stderr, "oboro serve: http://%s:%d/ (model %s, outputs %s, queue %zu)\n",
                 opt.host.find(':') != std::string::npos ? ("[" + opt.host + "]").c_str() : opt.host.c_str(), port,
                 cx.models.current().name.c_str(), opt.outputs.c_str(), opt.max_queue);

  // SIGTERM / SIGINT: stop accepting, cancel the jobs, let the HTTP threads answer, exit 0.
  g_signal_fd = ::eventfd(0, EFD_CLOEXEC);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    pollfd p{g_signal_fd, POLLIN, 0};
    while (!done) {
      if (::poll(&p, 1, 200) > 0) {
        if (!opt.quiet) std::fprintf(stderr, "oboro serve: stopping (signal): cancelling the jobs\n");
        cx.queue->shutdown();
        svr.stop();
        return;
      }
    }
  });
  std::fflush(stderr);
  svr.listen_after_bind();
  done = true;
  watcher.join();
  cx.queue->shutdown();
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  ::close(g_signal_fd);
  g_signal_fd = -1;
  if (!opt.quiet) std::fprintf(stderr, "oboro serve: stopped\n");
  return 0;
}

}  // namespace oboro::serve
