// The server's library parts without HTTP (issue 18): request parsing and its 400/422 errors, model-name checks,
// the job queue (order, limits, cancel of queued and running jobs, shutdown), the outputs folder and its history
// across restarts, and the generation hooks (progress, preview, cancel, resident models giving identical images).
#include "test_util.h"
#include "core/base64.h"
#include "flow/generate.h"
#include "io/image.h"
#include "models/codec.h"
#include "ops/backend.h"
#include "serve/jobs.h"
#include "serve/outputs.h"
#include "serve/request.h"
#include <gtest/gtest.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace oboro;
using namespace oboro::serve;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

int status_of(const std::function<void()>& f, std::string* field = nullptr) {
  try {
    f();
  } catch (const RequestError& e) {
    if (field) *field = e.field;
    return e.status;
  }
  return 0;
}

Image tiny_image(int w, int h, uint8_t v) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.assign((size_t)w * h * 3, v);
  for (size_t i = 0; i < im.rgb.size(); i += 7) im.rgb[i] = (uint8_t)(i * 13);
  return im;
}

std::string default_model() { return std::string(OBORO_SOURCE_DIR) + "/models/default/oboro-default.safetensors"; }

}  // namespace

TEST(ServeRequest, ParsesA1111Fields) {
  const json b = {{"prompt", "a cat"}, {"negative_prompt", "blurry"}, {"steps", 12}, {"cfg_scale", 4.5},
                  {"width", 64}, {"height", 32}, {"seed", 7}, {"batch_size", 2}, {"n_iter", 3},
                  {"sampler_name", "Euler"}, {"unknown_field", {1, 2}},
                  {"override_settings", {{"sd_model_checkpoint", "oboro-default [0123456789]"}}}};
  const ParsedRequest p = parse_a1111(b, Limits{}, false);
  EXPECT_EQ(p.rq.prompt, "a cat");
  EXPECT_EQ(p.rq.negative_prompt, "blurry");
  EXPECT_EQ(p.rq.steps, 12);
  EXPECT_FLOAT_EQ(p.rq.cfg_scale, 4.5f);
  EXPECT_EQ(p.rq.width, 64);
  EXPECT_EQ(p.rq.height, 32);
  EXPECT_EQ(p.rq.seed, 7);
  EXPECT_EQ(p.rq.batch_size, 2);
  EXPECT_EQ(p.rq.n_iter, 3);
  EXPECT_EQ(p.model, "oboro-default");
  EXPECT_FALSE(p.img2img);
  EXPECT_EQ(p.parameters["seed"], 7);
  // -1 becomes a concrete seed at submission.
  EXPECT_GE(parse_a1111({{"seed", -1}}, Limits{}, false).rq.seed, 0);
}

TEST(ServeRequest, BadFieldsAre422NamingTheField) {
  const Limits lim;
  struct Case {
    json body;
    std::string field;
  } cases[] = {{{{"steps", "ten"}}, "steps"},        {{{"steps", 0}}, "steps"},
               {{{"steps", 100000}}, "steps"},       {{{"cfg_scale", "x"}}, "cfg_scale"},
               {{{"width", 64}}, "height"},          {{{"width", 99999}, {"height", 64}}, "width"},
               {{{"seed", 1.5}}, "seed"},            {{{"batch_size", 99}}, "batch_size"},
               {{{"prompt", 3}}, "prompt"},          {{{"sampler_name", "DPM++ 2M"}}, "sampler_name"},
               {{{"init_images", "abc"}}, "init_images"}, {{{"init_images", {"!!!notbase64"}}}, "init_images"},
               {{{"init_images", {base64_encode("not an image at all")}}}, "init_images"},
               {{{"override_settings", {{"sd_model_checkpoint", "../../etc/passwd"}}}}, "override_settings.sd_model_checkpoint"},
               {{{"model", "/abs/model"}}, "model"},  {{{"batch_size", 8}, {"n_iter", 16}}, "n_iter"}};
  for (const auto& c : cases) {
    std::string field;
    EXPECT_EQ(status_of([&] { parse_a1111(c.body, lim, false); }, &field), 422) << c.body.dump();
    EXPECT_EQ(field, c.field) << c.body.dump();
  }
  std::string field;
  EXPECT_EQ(status_of([&] { parse_a1111(json::object(), lim, true); }, &field), 422);
  EXPECT_EQ(field, "init_images");
}

TEST(ServeRequest, MalformedBodiesAre400) {
  EXPECT_EQ(status_of([] { parse_body("{not json"); }), 400);
  EXPECT_EQ(status_of([] { parse_body("[1, 2]"); }), 400);
  EXPECT_EQ(status_of([] { parse_body(""); }), 400);
  EXPECT_EQ(status_of([] { parse_body("{\"prompt\": \"x\"}"); }), 0);
}

TEST(ServeRequest, InitImagesAndDataUrls) {
  const std::string png = encode_png(tiny_image(8, 6, 200));
  for (const std::string& s : {base64_encode(png), "data:image/png;base64," + base64_encode(png)}) {
    const ParsedRequest p = parse_a1111({{"init_images", {s}}, {"denoising_strength", 0.4}}, Limits{}, true);
    EXPECT_TRUE(p.img2img);
    EXPECT_EQ(p.rq.init_image_data.width, 8);
    EXPECT_EQ(p.rq.init_image_data.height, 6);
    EXPECT_FLOAT_EQ(p.rq.strength, 0.4f);
  }
}

TEST(ServeRequest, InpaintingMaskFields) {
  const std::string png = base64_encode(encode_png(tiny_image(8, 6, 200)));
  const ParsedRequest p = parse_a1111({{"init_images", {png}}, {"mask", png}, {"mask_blur", 2},
                                       {"inpainting_mask_invert", 1}, {"inpainting_fill", 1}, {"inpaint_full_res", 0}},
                                      Limits{}, true);
  EXPECT_TRUE(p.rq.inpaint());
  EXPECT_EQ(p.rq.mask_image_data.width, 8);
  EXPECT_EQ(p.rq.mask_blur, 2);
  EXPECT_TRUE(p.rq.invert_mask);
  EXPECT_EQ(p.parameters["mask_blur"], 2);
  EXPECT_EQ(parse_a1111({{"init_images", {png}}, {"mask", png}}, Limits{}, true).rq.mask_blur, 4);  // A1111's default
  struct Case {
    json body;
    std::string field;
  } cases[] = {{{{"mask", png}}, "mask"},
               {{{"init_images", {png}}, {"mask", "!!!"}}, "mask"},
               {{{"init_images", {png}}, {"mask", png}, {"mask_blur", 99}}, "mask_blur"},
               {{{"init_images", {png}}, {"mask", png}, {"inpainting_fill", 0}}, "inpainting_fill"},
               {{{"init_images", {png}}, {"mask", png}, {"inpaint_full_res", true}}, "inpaint_full_res"}};
  for (const auto& c : cases) {
    std::string field;
    EXPECT_EQ(status_of([&] { parse_a1111(c.body, Limits{}, false); }, &field), 422) << c.body.dump();
    EXPECT_EQ(field, c.field) << c.body.dump();
  }
}

TEST(ServeRequest, ModelNames) {
  EXPECT_EQ(clean_model_name("oboro-default", "m"), "oboro-default");
  EXPECT_EQ(clean_model_name("oboro-default.safetensors", "m"), "oboro-default");
  EXPECT_EQ(clean_model_name("oboro-default [abcdef0123]", "m"), "oboro-default");
  for (const char* bad : {"../x", "a/b", "/etc/passwd", "..", "a\\b", ".hidden", "~root", ""})
    EXPECT_EQ(status_of([&] { clean_model_name(bad, "m"); }), 422) << bad;
}

TEST(ServeRequest, OpenAI) {
  std::string fmt;
  const ParsedRequest p = parse_openai({{"prompt", "a dog"}, {"n", 2}, {"size", "64x32"}}, Limits{}, fmt);
  EXPECT_EQ(p.rq.batch_size, 2);
  EXPECT_EQ(p.rq.width, 64);
  EXPECT_EQ(p.rq.height, 32);
  EXPECT_EQ(fmt, "b64_json");
  std::string field;
  EXPECT_EQ(status_of([&] { parse_openai({{"prompt", "x"}, {"size", "big"}}, Limits{}, fmt); }, &field), 422);
  EXPECT_EQ(field, "size");
  EXPECT_EQ(status_of([&] { parse_openai({{"n", 1}}, Limits{}, fmt); }, &field), 422);
  EXPECT_EQ(field, "prompt");
  EXPECT_EQ(status_of([&] { parse_openai({{"prompt", "x"}, {"response_format", "gif"}}, Limits{}, fmt); }, &field), 422);
}

namespace {
// A runner that "generates" `total` steps of 10 ms each, honouring the cancel flag, and returns one image per job.
std::vector<ResultImage> fake_run(Job& job, const std::function<void(const StepEvent&)>& on_step) {
  const int total = job.rq.steps;
  for (int s = 1; s <= total; ++s) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    StepEvent ev;
    ev.step = s;
    ev.total = total;
    ev.preview = [](int side) { return tiny_image(side, side, 10); };
    on_step(ev);
    if (job.cancel) throw Cancelled();
  }
  return {{"2025-01-01/00000-1.png", (uint64_t)job.rq.seed, "x"}};
}

std::shared_ptr<Job> fake_job(int steps, long long seed = 1) {
  auto j = std::make_shared<Job>();
  j->rq.steps = steps;
  j->rq.seed = seed;
  j->kind = "txt2img";
  return j;
}

std::string status(const JobQueue& q, const Job& j) { return q.snapshot(j)["status"]; }

void wait_for(const JobQueue& q, const Job& j, const std::string& st) {
  for (int i = 0; i < 500 && status(q, j) != st; ++i) q.wait(j, q.snapshot(j)["version"], 0.05);
  ASSERT_EQ(status(q, j), st);
}
}  // namespace

TEST(ServeJobQueue, RunsInOrderWithProgressAndPreview) {
  JobQueue q(fake_run, 8, 100, 2, 16);
  auto a = fake_job(4, 10), b = fake_job(4, 20);
  ASSERT_TRUE(q.submit(a));
  ASSERT_TRUE(q.submit(b));
  EXPECT_EQ(a->id.size(), 16u);
  EXPECT_NE(a->id, b->id);
  wait_for(q, *b, "completed");
  EXPECT_EQ(status(q, *a), "completed");
  EXPECT_LT(a->finished, b->started + 1e-6);
  const json s = q.snapshot(*b, true);
  EXPECT_EQ(s["step"], 4);
  EXPECT_EQ(s["total"], 4);
  EXPECT_DOUBLE_EQ(s["progress"].get<double>(), 1.0);
  EXPECT_EQ(s["images"].size(), 1u);
  EXPECT_EQ(s["images"][0]["seed"], 20);
  EXPECT_EQ(s["preview_no"], 2);  // steps 2 and 4
  EXPECT_FALSE(s.contains("preview"));  // a finished job keeps its images, not its last preview
  EXPECT_EQ(q.find(a->id), a);
  EXPECT_EQ(q.stats().completed, 2u);
  EXPECT_EQ(q.stats().images, 2u);
}

TEST(ServeJobQueue, FullQueueRefusesAndCancelRemovesOrStops) {
  JobQueue q(fake_run, 2, 100, 1, 16);
  auto running = fake_job(1000), q1 = fake_job(5), q2 = fake_job(5), q3 = fake_job(5);
  ASSERT_TRUE(q.submit(running));
  wait_for(q, *running, "running");
  for (int i = 0; i < 200 && q.snapshot(*running)["preview_no"] == 0; ++i) q.wait(*running, q.snapshot(*running)["version"], 0.05);
  const json live = q.snapshot(*running, true);
  ASSERT_TRUE(live.contains("preview"));
  EXPECT_EQ(decode_image(base64_decode(live["preview"]), "preview").width, 16);
  ASSERT_TRUE(q.submit(q1));
  ASSERT_TRUE(q.submit(q2));
  EXPECT_FALSE(q.submit(q3));  // 2 waiting already
  EXPECT_EQ(q.stats().rejected, 1u);
  EXPECT_GE(q.retry_after(), 1);
  EXPECT_EQ(q.snapshot(*q2)["position"], 2);
  EXPECT_EQ(q.cancel(q1->id), JobQueue::CancelResult::Removed);
  EXPECT_EQ(status(q, *q1), "cancelled");
  EXPECT_EQ(q.snapshot(*q2)["position"], 1);
  EXPECT_EQ(q.cancel(running->id), JobQueue::CancelResult::Stopping);
  wait_for(q, *running, "cancelled");
  EXPECT_LT(q.snapshot(*running)["step"].get<int>(), 1000);
  wait_for(q, *q2, "completed");
  EXPECT_EQ(q.cancel(q2->id), JobQueue::CancelResult::AlreadyFinished);
  EXPECT_EQ(q.cancel("0123456789abcdef"), JobQueue::CancelResult::Unknown);
  EXPECT_FALSE(q.interrupt());
}

TEST(ServeJobQueue, FailuresAndShutdown) {
  JobQueue q([](Job& j, const auto& on_step) -> std::vector<ResultImage> {
    if (j.rq.steps == 3) throw std::runtime_error("boom");
    return fake_run(j, on_step);
  }, 8, 2);
  auto bad = fake_job(3);
  ASSERT_TRUE(q.submit(bad));
  wait_for(q, *bad, "failed");
  EXPECT_EQ(q.snapshot(*bad)["error"], "boom");
  auto longj = fake_job(100000), queued = fake_job(5);
  ASSERT_TRUE(q.submit(longj));
  ASSERT_TRUE(q.submit(queued));
  wait_for(q, *longj, "running");
  q.shutdown();
  EXPECT_EQ(status(q, *longj), "cancelled");
  EXPECT_EQ(status(q, *queued), "cancelled");
  EXPECT_FALSE(q.submit(fake_job(1)));
  q.shutdown();  // idempotent
}

TEST(ServeOutputs, HistorySurvivesRestartsAndRebuildsFromPngs) {
  const fs::path root = oboro::test::process_tmpdir("oboro_serve") / "outputs";
  fs::remove_all(root);
  std::vector<std::string> files;
  {
    OutputStore st(root.string());
    for (int i = 0; i < 3; ++i) {
      GeneratedImage g;
      g.image = tiny_image(4, 4, (uint8_t)(50 * i));
      g.seed = 100 + i;
      g.infotext = "prompt " + std::to_string(i) + "\nSteps: 4, Seed: " + std::to_string(100 + i);
      g.request_json = json({{"prompt", "prompt " + std::to_string(i)}, {"seed", 100 + i}, {"steps", 4}}).dump();
      files.push_back(st.save(g, {{"job_id", "j" + std::to_string(i)}}));
      EXPECT_TRUE(valid_output_name(files.back())) << files.back();
    }
    const json h = st.history(0, 10);
    EXPECT_EQ(h["total"], 3);
    EXPECT_EQ(h["items"][0]["file"], files[2]);  // newest first
    EXPECT_EQ(h["items"][0]["seed"], 102);
    EXPECT_EQ(st.history(1, 1)["items"][0]["file"], files[1]);
  }
  {  // restart: the index
    OutputStore st(root.string());
    const json h = st.history(0, 10);
    ASSERT_EQ(h["total"], 3);
    EXPECT_EQ(h["items"][2]["prompt"], "prompt 0");
    EXPECT_EQ(h["items"][2]["job_id"], "j0");
    EXPECT_EQ(h["items"][0]["url"], "/oboro/v1/images/" + files[2]);
  }
  {  // a torn index line and a PNG the index does not list (written before a crash)
    std::ofstream(root / "history.jsonl", std::ios::app) << "{\"file\": \"2025-";
    std::string lines;
    {
      std::ifstream in(root / "history.jsonl");
      std::string l;
      int n = 0;
      while (std::getline(in, l))
        if (n++ != 1) lines += l + "\n";  // drop image 1's line
    }
    std::ofstream(root / "history.jsonl", std::ios::trunc) << lines;
    OutputStore st(root.string());
    const json h = st.history(0, 10);
    ASSERT_EQ(h["total"], 3);
    EXPECT_EQ(h["items"][1]["file"], files[1]);
    EXPECT_EQ(h["items"][1]["prompt"], "prompt 1");  // from its oboro_request chunk
  }
  {  // no index at all: every PNG is read
    fs::remove(root / "history.jsonl");
    OutputStore st(root.string());
    EXPECT_EQ(st.history(0, 10)["total"], 3);
  }
  {  // a torn last line with no newline (a crash mid-append): the next record starts on a line of its own
    std::ofstream(root / "history.jsonl", std::ios::app) << "{\"file\": \"2025-";
    std::string rel;
    {
      OutputStore st(root.string());
      GeneratedImage g;
      g.image = tiny_image(4, 4, 7);
      g.seed = 7;
      g.infotext = "after the tear\nSteps: 4, Seed: 7";
      g.request_json = json({{"prompt", "after the tear"}, {"seed", 7}}).dump();
      rel = st.save(g, {});
      EXPECT_EQ(st.history(0, 1)["items"][0]["prompt"], "after the tear");
    }
    OutputStore st(root.string());
    const json h = st.history(0, 10);
    ASSERT_EQ(h["total"], 4);
    EXPECT_EQ(h["items"][0]["file"], rel);
    EXPECT_EQ(h["items"][0]["prompt"], "after the tear");
    EXPECT_EQ(h["items"][0]["url"], "/oboro/v1/images/" + rel);
  }
  OutputStore st(root.string());
  EXPECT_NE(st.path_of(files[0]), "");
  for (const char* bad : {"../x.png", "2025-01-01/../../etc/passwd", "/etc/passwd", "history.jsonl", "2025-01-01/a.png"})
    EXPECT_EQ(st.path_of(bad), "") << bad;
}

TEST(ServeGenerate, HooksPreviewCancelAndResidentModelsGiveTheSameImages) {
  GenerateRequest rq;
  rq.model = default_model();
  rq.prompt = "pixel art style, short hair, smile, blue background";
  rq.width = rq.height = 32;
  rq.steps = 4;
  rq.seed = 5;
  const std::vector<GeneratedImage> plain = generate(cpu_backend(), rq, false);

  ModelCache cache;
  std::vector<std::pair<int, int>> steps;
  GenerateHooks hooks;
  hooks.cache = &cache;
  hooks.on_step = [&](const StepEvent& ev) {
    steps.push_back({ev.step, ev.total});
    const Image p = ev.preview(16);
    EXPECT_EQ(p.width, 16);
    EXPECT_EQ(p.height, 16);
  };
  for (int run = 0; run < 2; ++run) {
    steps.clear();
    const auto got = generate(cpu_backend(), rq, false, nullptr, &hooks);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].image.rgb, plain[0].image.rgb) << "run " << run;
    EXPECT_EQ(got[0].infotext, plain[0].infotext);
    EXPECT_EQ(steps.size(), 4u);
    EXPECT_EQ(steps.back(), std::make_pair(4, 4));
    EXPECT_TRUE(cache.resident);
    EXPECT_TRUE(cache.dit && cache.te);
  }
  // Another request in between does not change the next one.
  GenerateRequest other = rq;
  other.prompt = "a red heart, emoji";
  other.seed = 9;
  generate(cpu_backend(), other, false, nullptr, &hooks);
  EXPECT_EQ(generate(cpu_backend(), rq, false, nullptr, &hooks)[0].image.rgb, plain[0].image.rgb);

  std::atomic<bool> cancel{false};
  GenerateHooks stop;
  stop.cancel = &cancel;
  int seen = 0;
  stop.on_step = [&](const StepEvent&) {
    if (++seen == 2) cancel = true;
  };
  EXPECT_THROW(generate(cpu_backend(), rq, false, nullptr, &stop), Cancelled);
  EXPECT_EQ(seen, 2);
}

TEST(ServeGenerate, PixelsPreviewIsTheImage) {
  const Image im = tiny_image(8, 8, 77);
  std::vector<float> chw(3 * 64), lat(12 * 16);
  image_to_chw(im, chw.data());
  PixelsCodec{2}.encode(chw.data(), 8, 8, lat.data());
  const Image p = latent_preview(lat.data(), 12, 4, 4, 2, {}, 0);
  EXPECT_EQ(p.rgb, im.rgb);
  const Image small = latent_preview(lat.data(), 12, 4, 4, 2, {}, 4);
  EXPECT_EQ(small.width, 4);
  // A VAE-like latent with a fit: a linear map of the channels.
  std::vector<float> fit = {1, 0, 0, 0, /*G*/ 0, 1, 0, 0, /*B*/ 0, 0, 1, 0};
  std::vector<float> l3(3 * 4, 0.f);
  const Image v = latent_preview(l3.data(), 3, 2, 2, 8, fit, 0);
  EXPECT_EQ(v.width, 2);
  EXPECT_EQ(v.rgb[0], 128);
}
