// `oboro serve`'s request bodies (src/serve/request.h): the JSON a client POSTs to /sdapi/v1/txt2img,
// /sdapi/v1/img2img, the job API and /v1/images/generations, including base64 init images. Every body is parsed
// as a txt2img, an img2img and an OpenAI request. A RequestError (the server's 400/422 answer naming the field)
// or an oboro::Error is a normal outcome; it must carry an HTTP status the server can send, a one-line message,
// and a field name that is a valid JSON string. Anything else (another exception type, a crash, UB, a leak) is a
// finding. A parsed request must have sizes, steps and image counts within the limits.
#include "fuzz_util.h"
#include "serve/request.h"

#include <nlohmann/json.hpp>

using namespace oboro;
using namespace oboro::serve;

namespace {

void check_refusal(const RequestError& e) {
  if (e.status != 400 && e.status != 404 && e.status != 422 && e.status != 429) {
    dprintf(fuzz::diag_fd(), "oboro fuzz: RequestError with status %d\n", e.status);
    std::abort();
  }
  const std::string_view msg = e.what();
  if (msg.empty() || msg.find('\n') != std::string_view::npos) {
    dprintf(fuzz::diag_fd(), "oboro fuzz: RequestError message is not one line: %s\n", e.what());
    std::abort();
  }
  // The field goes into the 422 body's detail[].loc: it must serialise.
  (void)nlohmann::json(e.field).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
}

void check_parsed(const ParsedRequest& p, const Limits& lim) {
  const GenerateRequest& rq = p.rq;
  const bool ok = rq.width >= 0 && rq.height >= 0 && (rq.width == 0) == (rq.height == 0) && rq.width <= lim.max_side && rq.height <= lim.max_side &&
                  rq.steps > 0 && rq.steps <= lim.max_steps && rq.batch_size > 0 && rq.batch_size <= lim.max_batch &&
                  rq.n_iter > 0 && rq.batch_size * rq.n_iter <= lim.max_images;
  if (!ok) {
    dprintf(fuzz::diag_fd(), "oboro fuzz: accepted request out of limits: %dx%d, %d steps, batch %d x %d\n",
            rq.width, rq.height, rq.steps, rq.batch_size, rq.n_iter);
    std::abort();
  }
  (void)p.parameters.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

template <class Parse>
void attempt(Parse&& parse) {
  try {
    parse();
  } catch (const RequestError& e) {
    check_refusal(e);
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init_common();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  Limits lim;
  lim.max_side = 256;  // keeps decoded init images and parsed sizes small
  nlohmann::json j;
  try {
    j = parse_body(body);
  } catch (const RequestError& e) {
    check_refusal(e);
    return 0;
  }
  attempt([&] { check_parsed(parse_a1111(j, lim, false), lim); });
  attempt([&] { check_parsed(parse_a1111(j, lim, true), lim); });
  attempt([&] {
    std::string format;
    check_parsed(parse_openai(j, lim, format), lim);
  });
  return 0;
}
