// The server's request parsing (`oboro serve`): JSON bodies of the A1111 (`/sdapi/v1/txt2img|img2img`, the job
// API) and OpenAI (`/v1/images/generations`) endpoints → a checked GenerateRequest. Field names are A1111's
// (docs/conventions.md#http-api); unknown fields are ignored, a field with a wrong type or an out-of-range value is
// a RequestError(422) naming it, a body that is not a JSON object is a RequestError(400).
#pragma once
#include "flow/generate.h"
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace oboro::serve {

// A request the server refuses: the HTTP status (400 malformed JSON, 404 unknown model or job, 422 bad field,
// 429 queue full) and the field it names ("" = the whole request).
struct RequestError : std::runtime_error {
  int status;
  std::string field;
  RequestError(int status, std::string field, const std::string& message)
      : std::runtime_error(message), status(status), field(std::move(field)) {}
};

// Bounds on what one request may ask for (`oboro serve --max-size/--max-steps/--max-batch`); the memory plan is
// checked on top of them when the job is submitted.
struct Limits {
  int max_side = 2048;     // width and height
  int max_steps = 150;
  int max_batch = 8;       // batch_size (and OpenAI n)
  int max_n_iter = 16;
  int max_images = 32;     // batch_size · n_iter
};

// A parsed generation request. `rq.model` is left empty; `model` is the catalogue name the request asked for
// ("" = the server's current model), resolved by the ModelCatalog (never a path from the client).
struct ParsedRequest {
  GenerateRequest rq;
  std::string model;
  bool img2img = false;
  nlohmann::json parameters;  // the A1111 `parameters` echo (the request with defaults filled in)
};

// Parses a body: RequestError(400) when it is not JSON or not an object.
nlohmann::json parse_body(const std::string& body);
// A1111 txt2img / img2img fields (init_images present → img2img; `require_init` for /img2img). The seed -1 is
// replaced by a random one here, so the job's seeds are known when it is submitted.
ParsedRequest parse_a1111(const nlohmann::json& body, const Limits& lim, bool require_init);
// OpenAI images: prompt, n, size "WxH", response_format (b64_json | url), model.
ParsedRequest parse_openai(const nlohmann::json& body, const Limits& lim, std::string& response_format);
// A base64 image (a `data:image/...;base64,` prefix is allowed) → decoded pixels; RequestError(422) naming `field`
// when the base64 or the image is bad.
Image decode_b64_image(const std::string& text, const std::string& field);

// A model name from a client: a bare name (no '/', '\\', "..", NUL, not absolute, at most 200 bytes), with an
// optional ".safetensors" and A1111's " [hash]" title suffix removed. RequestError(422) otherwise.
std::string clean_model_name(const std::string& name, const std::string& field);

}  // namespace oboro::serve
