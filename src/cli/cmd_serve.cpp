// `oboro serve`: the HTTP API (A1111, OpenAI, async jobs with SSE) and the web UI; see docs/serve.md.
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/threads.h"
#include "flow/memory_plan.h"
#include "serve/server.h"
#include <cstdio>
#include <cstdlib>

namespace oboro::cli {

void register_serve(CLI::App& app) {
  struct Opts {
    serve::ServeOptions s;
    std::string max_memory, max_body;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("serve", "HTTP API (A1111, OpenAI, async jobs with progress) and a web UI");
  c->add_option("--host", o->s.host, "address to listen on (anything but loopback needs --api-key, or prints a warning)")
      ->capture_default_str();
  c->add_option("--port", o->s.port, "TCP port (0: any free port, printed at start)")->capture_default_str()
      ->check(int_in(0, 65535, " (0 = any free port)"));
  c->add_option("--model,-m", o->s.model, "the model loaded first (default: the bundled default model)");
  c->add_option("--models-dir", o->s.models_dir,
                "ComfyUI-style models folder: every DIR/diffusion_models/*.safetensors is offered by name; T5 and VAE "
                "are looked up in DIR/text_encoders and DIR/vae (default: $OBORO_MODELS_DIR)");
  c->add_option("--t5,--text-encoder", o->s.text_encoder, "text encoder for every job (default: the one the model names)");
  c->add_option("--lora-dir", o->s.lora_dir,
                "LoRAs for <lora:NAME:WEIGHT> in prompts and /sdapi/v1/loras (default: DIR/loras of --models-dir, else "
                "models/loras)");
  c->add_option("--vae", o->s.vae, "FLUX.1 VAE for flux-vae models (default: DIR/vae/ae.safetensors)");
  c->add_option("--api-key", o->s.api_key,
                "require 'Authorization: Bearer KEY' on every endpoint but /health and the UI's static files "
                "(default: $OBORO_API_KEY)");
  c->add_option("--cors", o->s.cors, "allow cross-origin requests from this origin (e.g. http://localhost:3000, or *)");
  c->add_option("--outputs,--output-dir,-o", o->s.outputs, "folder for the images and history.jsonl")->capture_default_str();
  c->add_option("--max-queue", o->s.max_queue, "jobs waiting at most; more are answered 429 with Retry-After")
      ->capture_default_str()
      ->check(int_in(1, 1000000));
  c->add_option("--keep-jobs", o->s.keep_jobs,
                 "finished jobs remembered for GET /oboro/v1/jobs/{id}, oldest forgotten first (default: 4096, or 4 x "
                 "--max-queue if more)")
      ->check(int_in(1, 10000000));
  c->add_option("--max-body", o->max_body, "largest request body (413 beyond it), e.g. 32M")->default_str("32M");
  c->add_option("--max-size", o->s.limits.max_side, "largest width or height")->capture_default_str()
      ->check(int_in(16, 16384));
  c->add_option("--max-steps", o->s.limits.max_steps, "most sampling steps per request")->capture_default_str()
      ->check(int_in(1, 1000));
  c->add_option("--max-batch", o->s.limits.max_batch, "largest batch_size (OpenAI n)")->capture_default_str()
      ->check(int_in(1, 256));
  c->add_option("--max-images", o->s.limits.max_images, "most images per request (batch_size x n_iter)")->capture_default_str()
      ->check(int_in(1, 100000));
  c->add_option("--max-memory", o->max_memory, "memory budget of the plan checked for each request (default: MemAvailable)");
  c->add_option("--http-threads", o->s.http_threads, "HTTP worker threads (each open SSE stream holds one)")
      ->capture_default_str()
      ->check(int_in(1, 1024));
  c->add_option("--timeout", o->s.timeout_s, "read/write timeout of a connection, seconds")->capture_default_str()
      ->check(int_in(1, 86400, " seconds"));
  c->add_option("--sync-timeout", o->s.sync_timeout_s, "longest a synchronous request waits for its job, seconds")
      ->capture_default_str()
      ->check(int_in(1, 604800, " seconds"));
  c->add_option("--preview-every", o->s.preview_every, "steps between preview images (0 = about 8 per pass)")
      ->capture_default_str()
      ->check(int_in(0, 1000, " (0 = about 8 per pass)"));
  c->add_option("--web-dir", o->s.web_dir, "serve the UI's files from this folder (development) instead of the built-in copy");
  c->add_option("--threads", o->threads, "CPU threads for generation (default: all cores)")
      ->check(int_in(1, 4096));
  c->add_flag("--quiet,-q", o->s.quiet, "no start/stop lines on stderr");
  c->callback([o] {
    if (o->threads > 0) set_num_threads(o->threads);
    serve::ServeOptions s = o->s;
    if (s.model.empty()) s.model = default_model();
    if (s.api_key.empty())
      if (const char* k = std::getenv("OBORO_API_KEY")) s.api_key = k;
    if (s.models_dir.empty())
      if (const char* d = std::getenv("OBORO_MODELS_DIR")) s.models_dir = d;
    if (!o->max_memory.empty()) s.max_memory = parse_bytes(o->max_memory, "--max-memory");
    if (!o->max_body.empty()) s.max_body = parse_bytes(o->max_body, "--max-body");
    if (s.port < 0 || s.port > 65535) fail("--port must be between 0 and 65535, got ", s.port);
    if (s.max_queue < 1) fail("--max-queue must be at least 1");
    const serve::Limits& l = s.limits;
    if (l.max_side < 8 || l.max_steps < 1 || l.max_batch < 1 || l.max_images < 1)
      fail("--max-size must be at least 8, --max-steps, --max-batch and --max-images at least 1");
    const int rc = serve::run_server(s, backend());
    if (rc != 0) std::exit(rc);
  });
}

}  // namespace oboro::cli
