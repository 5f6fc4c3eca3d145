// The A1111-compatible endpoints (/sdapi/v1/*) and the OpenAI images endpoints (/v1/*): synchronous generation
// (the request waits for its job; a client that goes away cancels it), progress, interrupt, models, options,
// samplers, png-info. Field names and reply shapes as docs/conventions.md#http-api.
#include "core/base64.h"
#include "core/error.h"
#include "flow/infotext.h"
#include "flow/lora_apply.h"
#include "io/image.h"
#include "serve/server_internal.h"
#include <filesystem>

namespace oboro::serve {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// A1111's `info` (a JSON string): all_seeds, all_prompts, infotexts, ... of a finished job.
json a1111_info(Context& cx, const Job& job, const json& snap) {
  const GenerateRequest& rq = job.rq;
  json seeds = json::array(), infotexts = json::array(), prompts = json::array(), negs = json::array();
  int W = rq.width, H = rq.height;
  for (const auto& im : snap["images"]) {
    seeds.push_back(im["seed"]);
    infotexts.push_back(im["infotext"]);
    for (const auto& [k, v] : parse_infotext(im["infotext"].get<std::string>()).params)
      if (k == "Size") std::sscanf(v.c_str(), "%dx%d", &W, &H);
  }
  if (seeds.empty())
    for (int i = 0; i < rq.batch_size * rq.n_iter; ++i) seeds.push_back(rq.seed + i);
  for (size_t i = 0; i < seeds.size(); ++i) {
    prompts.push_back(rq.prompt);
    negs.push_back(rq.negative_prompt);
  }
  json info = {{"prompt", rq.prompt}, {"all_prompts", prompts}, {"negative_prompt", rq.negative_prompt},
               {"all_negative_prompts", negs}, {"seed", seeds.empty() ? json(rq.seed) : seeds[0]}, {"all_seeds", seeds},
               {"subseed", -1}, {"all_subseeds", json::array()}, {"subseed_strength", 0}, {"width", W}, {"height", H},
               {"sampler_name", "Euler"}, {"cfg_scale", rq.cfg_scale}, {"steps", rq.steps},
               {"batch_size", rq.batch_size}, {"n_iter", rq.n_iter}, {"restore_faces", false},
               {"sd_model_name", job.model}, {"sd_model_hash", ModelCatalog::hash10(rq.model)},
               {"denoising_strength", job.kind == "img2img" ? json(rq.strength) : rq.hires() ? json(rq.hr_strength) : json(nullptr)},
               {"extra_generation_params", json::object()}, {"index_of_first_image", 0}, {"infotexts", infotexts},
               {"styles", json::array()}, {"job_timestamp", (long long)job.created}, {"clip_skip", 1},
               {"is_using_inpainting_conditioning", false}, {"version", "oboro 0.1.0"}, {"job_id", job.id},
               {"interrupted", snap["status"] == "cancelled"}};
  return info;
}

void generate_a1111(Context& cx, const httplib::Request& req, httplib::Response& res, bool img2img) {
  ParsedRequest p = parse_a1111(parse_body(req.body), cx.opt.limits, img2img);
  const std::string kind = p.img2img ? "img2img" : "txt2img";
  auto job = make_job(cx, std::move(p), kind);
  if (!submit(cx, job, res)) return;
  if (!wait_sync(cx, req, *job)) {
    send_error(res, 499, "", "the client closed the request: its job was cancelled");
    return;
  }
  const json snap = cx.queue->snapshot(*job);
  if (snap["status"] == "failed") {
    send_error(res, 500, "", snap.value("error", std::string("generation failed")));
    return;
  }
  json images = json::array();
  for (const auto& im : snap["images"]) images.push_back(image_b64(cx, im["file"]));
  send_json(res, 200, {{"images", images}, {"parameters", job->parameters}, {"info", a1111_info(cx, *job, snap).dump()}});
}

json progress_json(Context& cx, bool skip_image) {
  const auto job = cx.queue->running();
  const QueueStats st = cx.queue->stats();
  json state = {{"skipped", false}, {"interrupted", false}, {"job", ""}, {"job_count", st.queued + (job ? 1 : 0)},
                {"job_timestamp", "0"}, {"job_no", 0}, {"sampling_step", 0}, {"sampling_steps", 0}};
  json out = {{"progress", 0.0}, {"eta_relative", 0.0}, {"current_image", nullptr}, {"textinfo", nullptr}};
  if (job) {
    const json s = cx.queue->snapshot(*job, !skip_image);
    state["job"] = s["id"];
    state["job_timestamp"] = std::to_string((long long)job->created);
    state["job_no"] = s["batch"];
    state["sampling_step"] = s["step"];
    state["sampling_steps"] = s["total"];
    state["interrupted"] = job->cancel.load();
    out["progress"] = s["progress"];
    out["eta_relative"] = s.value("eta_relative", 0.0);
    if (s.contains("preview")) out["current_image"] = s["preview"];
    out["textinfo"] = str("step ", s["step"].get<int>(), "/", s["total"].get<int>());
  }
  out["state"] = state;
  return out;
}

json png_info(const json& body) {
  if (!body.contains("image") || !body["image"].is_string()) throw RequestError(422, "image", "image: a base64 PNG is required");
  std::string b = body["image"];
  if (b.rfind("data:", 0) == 0 && b.find(',') != std::string::npos) b = b.substr(b.find(',') + 1);
  std::string bytes;
  try {
    bytes = base64_decode(b);
  } catch (const Error&) {
    throw RequestError(422, "image", "image: not valid base64");
  }
  TextChunks text;
  try {
    decode_image(bytes, "image");  // a readable image at all
    if (bytes.size() >= 8 && bytes.compare(1, 3, "PNG") == 0) text = read_png_text_bytes(bytes, "image");
  } catch (const Error& e) {
    throw RequestError(422, "image", std::string("image: not a readable image (") + e.what() + ")");
  }
  json items = json::object(), params = json::object();
  std::string info;
  for (const auto& [k, v] : text) {
    items[k] = v;
    if (k == "parameters") info = v;
  }
  if (!info.empty()) {
    const Infotext it = parse_infotext(info);
    params["Prompt"] = it.prompt;
    params["Negative prompt"] = it.negative;
    for (const auto& [k, v] : it.params) params[k] = v;
  }
  return {{"info", info}, {"items", items}, {"parameters", params}};
}

}  // namespace

void register_a1111_routes(httplib::Server& svr, Context& cx) {
  svr.Post("/sdapi/v1/txt2img", guard([&cx](const auto& req, auto& res) { generate_a1111(cx, req, res, false); }));
  svr.Post("/sdapi/v1/img2img", guard([&cx](const auto& req, auto& res) { generate_a1111(cx, req, res, true); }));
  svr.Get("/sdapi/v1/progress", guard([&cx](const httplib::Request& req, auto& res) {
    send_json(res, 200, progress_json(cx, req.get_param_value("skip_current_image") == "true"));
  }));
  svr.Post("/sdapi/v1/interrupt", guard([&cx](const auto&, auto& res) {
    send_json(res, 200, {{"interrupted", cx.queue->interrupt()}});
  }));
  svr.Post("/sdapi/v1/skip", guard([&cx](const auto&, auto& res) {
    send_json(res, 200, {{"interrupted", cx.queue->interrupt()}});
  }));
  svr.Get("/sdapi/v1/sd-models", guard([&cx](const auto&, auto& res) { send_json(res, 200, cx.models.a1111_list()); }));
  svr.Post("/sdapi/v1/refresh-checkpoints", guard([](const auto&, auto& res) { send_json(res, 200, json::object()); }));
  svr.Get("/sdapi/v1/samplers", guard([](const auto&, auto& res) {
    send_json(res, 200, json::array({{{"name", "Euler"}, {"aliases", {"k_euler", "euler"}}, {"options", json::object()}}}));
  }));
  // A1111's listing of the LoRA folder: name, alias (kohya's ss_output_name when recorded), path, metadata.
  svr.Get("/sdapi/v1/loras", guard([&cx](const auto&, auto& res) {
    json out = json::array();
    for (const LoraListing& l : list_loras(lora_dir_or_default(cx.opt.lora_dir, cx.opt.models_dir))) {
      auto alias = l.metadata.find("ss_output_name");
      out.push_back({{"name", l.name}, {"alias", alias != l.metadata.end() ? alias->second : l.name}, {"path", l.path},
                     {"metadata", l.metadata}});
    }
    send_json(res, 200, out);
  }));
  svr.Get("/sdapi/v1/options", guard([&cx](const auto&, auto& res) {
    const ModelEntry m = cx.models.current();
    const std::string h = ModelCatalog::hash10(m.path);
    send_json(res, 200, {{"sd_model_checkpoint", h.empty() ? m.name : m.name + " [" + h + "]"}, {"sd_checkpoint_hash", h},
                         {"samples_save", true}, {"samples_format", "png"}, {"outdir_samples", cx.opt.outputs},
                         {"enable_pnginfo", true}, {"live_previews_enable", true}});
  }));
  svr.Post("/sdapi/v1/options", guard([&cx](const httplib::Request& req, auto& res) {
    const json body = parse_body(req.body);
    if (body.contains("sd_model_checkpoint")) {
      if (!body["sd_model_checkpoint"].is_string())
        throw RequestError(422, "sd_model_checkpoint", "sd_model_checkpoint: must be a string");
      cx.models.set_current(clean_model_name(body["sd_model_checkpoint"], "sd_model_checkpoint"));
    }
    send_json(res, 200, json::object());
  }));
  svr.Post("/sdapi/v1/png-info", guard([](const httplib::Request& req, auto& res) {
    send_json(res, 200, png_info(parse_body(req.body)));
  }));

  // OpenAI images.
  svr.Post("/v1/images/generations", guard([&cx](const httplib::Request& req, httplib::Response& res) {
    std::string format;
    ParsedRequest p = parse_openai(parse_body(req.body), cx.opt.limits, format);
    auto job = make_job(cx, std::move(p), "txt2img");
    if (!submit(cx, job, res, true)) return;
    if (!wait_sync(cx, req, *job)) {
      send_error(res, 499, "", "the client closed the request: its job was cancelled", true);
      return;
    }
    const json snap = cx.queue->snapshot(*job);
    if (snap["status"] != "completed") {
      send_error(res, snap["status"] == "cancelled" ? 409 : 500, "",
                 snap["status"] == "cancelled" ? "the job was cancelled" : snap.value("error", std::string("failed")), true);
      return;
    }
    json data = json::array();
    const std::string host = req.get_header_value("Host");
    for (const auto& im : snap["images"]) {
      if (format == "url") data.push_back({{"url", "http://" + host + im["url"].get<std::string>()}, {"revised_prompt", job->rq.prompt}});
      else data.push_back({{"b64_json", image_b64(cx, im["file"])}, {"revised_prompt", job->rq.prompt}});
    }
    send_json(res, 200, {{"created", (long long)job->created}, {"data", data}});
  }, true));
  svr.Get("/v1/models", guard([&cx](const auto&, auto& res) {
    json data = json::array();
    for (const auto& m : cx.models.list()) {
      std::error_code ec;
      const auto t = fs::last_write_time(m.path, ec);
      const long long created = ec ? 0 : (long long)std::chrono::duration_cast<std::chrono::seconds>(
                                                  std::chrono::file_clock::to_sys(t).time_since_epoch()).count();
      data.push_back({{"id", m.name}, {"object", "model"}, {"created", created}, {"owned_by", "oboro"}});
    }
    send_json(res, 200, {{"object", "list"}, {"data", data}});
  }, true));
}

}  // namespace oboro::serve
