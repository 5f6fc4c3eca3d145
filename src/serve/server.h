// `oboro serve`: the HTTP server (cpp-httplib) in front of the job queue — A1111, OpenAI and oboro job endpoints,
// SSE progress, history, /health, /metrics and the web UI (docs/serve.md).
#pragma once
#include "serve/request.h"
#include <string>

namespace oboro {
class Backend;
}

namespace oboro::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 7860;
  std::string model;          // the model loaded first (path); the command fills in the bundled default
  std::string models_dir;     // ComfyUI-style folder: more models in DIR/diffusion_models, T5 / VAE lookups
  std::string text_encoder, vae;  // --t5 / --vae for every job ("" = what the model names / DIR/vae)
  std::string lora_dir;       // LoRAs for <lora:NAME:W> prompt tags and /sdapi/v1/loras ("" = DIR/loras or models/loras)
  std::string api_key;        // non-empty: every endpoint but /health and the UI's files needs `Authorization: Bearer`
  std::string cors;           // allowed cross-origin Origin ("" = none; "*" = any)
  std::string outputs = "outputs";
  size_t max_queue = 64;
  size_t keep_jobs = 0;       // finished jobs remembered for GET /oboro/v1/jobs/{id} (0 = max(4096, 4 x max_queue))
  size_t max_body = 32u << 20;
  size_t max_memory = 0;      // the memory plan's budget (0 = MemAvailable)
  Limits limits;
  int http_threads = 16;
  int timeout_s = 30;         // read/write timeout of a connection
  int sync_timeout_s = 3600;  // longest a synchronous request waits for its job
  int preview_every = 0;      // steps between previews (0 = about 8 per pass)
  std::string web_dir;        // serve the UI from this folder instead of the files built into the binary
  bool quiet = false;
};

// Runs until SIGTERM / SIGINT: then stops accepting, cancels the queued and the running job (nothing is written
// half: images are written whole, after their job's last step), and returns 0. Errors before listening (port in
// use, no model) throw oboro::Error.
int run_server(const ServeOptions& opt, Backend& be);

}  // namespace oboro::serve
