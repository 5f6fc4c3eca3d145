#include "serve/request.h"
#include "core/base64.h"
#include "core/error.h"
#include "core/utf8.h"
#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>
#include <cstdio>
#include <random>

namespace oboro::serve {

using nlohmann::json;

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& msg) { throw RequestError(422, field, field + ": " + msg); }

bool has(const json& b, const char* f) { return b.contains(f) && !b.at(f).is_null(); }

std::optional<std::string> get_str(const json& b, const char* f, size_t max_len = 1 << 16) {
  if (!has(b, f)) return std::nullopt;
  if (!b.at(f).is_string()) bad(f, "must be a string");
  std::string s = b.at(f).get<std::string>();
  if (s.size() > max_len) bad(f, str("is longer than ", max_len, " bytes"));
  return s;
}

std::optional<long long> get_int(const json& b, const char* f, long long lo, long long hi) {
  if (!has(b, f)) return std::nullopt;
  const json& v = b.at(f);
  long long x;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<unsigned long long>() > (unsigned long long)hi) bad(f, str("must be at most ", hi));
    x = v.get<long long>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9e15) bad(f, "must be an integer");
    x = (long long)d;
  } else {
    bad(f, "must be an integer");
  }
  if (x < lo || x > hi) bad(f, str("must be between ", lo, " and ", hi, ", got ", x));
  return x;
}

std::optional<double> get_num(const json& b, const char* f, double lo, double hi) {
  if (!has(b, f)) return std::nullopt;
  const json& v = b.at(f);
  if (!v.is_number()) bad(f, "must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(f, str("must be between ", lo, " and ", hi));
  return x;
}

std::optional<bool> get_bool(const json& b, const char* f) {
  if (!has(b, f)) return std::nullopt;
  if (!b.at(f).is_boolean()) bad(f, "must be true or false");
  return b.at(f).get<bool>();
}

// The key whose value holds the byte where a body stops being valid JSON: a SAX pass over the body records the last
// key before the error (keys of nested objects are joined with '.'). "" when the error is outside any value.
struct LastKey : nlohmann::json_sax<json> {
  std::vector<std::string> path{""};
  std::string key_at_error;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { path.push_back(""); return true; }
  bool key(string_t& k) override { path.back() = k; return true; }
  bool end_object() override { path.pop_back(); return true; }
  bool start_array(std::size_t) override { path.push_back(""); return true; }
  bool end_array() override { path.pop_back(); return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    for (const auto& k : path)
      if (!k.empty()) key_at_error += (key_at_error.empty() ? "" : ".") + k;
    return false;
  }
};

long long random_seed() {
  std::random_device rd;
  return (long long)(rd() & 0x7fffffff);
}

// The fields shared by txt2img and img2img.
void parse_common(const json& b, const Limits& lim, ParsedRequest& p) {
  GenerateRequest& rq = p.rq;
  rq.prompt = get_str(b, "prompt").value_or("");
  rq.negative_prompt = get_str(b, "negative_prompt").value_or("");
  rq.steps = (int)get_int(b, "steps", 1, lim.max_steps).value_or(rq.steps);
  rq.cfg_scale = (float)get_num(b, "cfg_scale", 0.0, 100.0).value_or(rq.cfg_scale);
  rq.width = (int)get_int(b, "width", 0, lim.max_side).value_or(0);
  rq.height = (int)get_int(b, "height", 0, lim.max_side).value_or(0);
  if ((rq.width == 0) != (rq.height == 0)) bad(rq.width == 0 ? "width" : "height", "give both width and height, or neither");
  rq.seed = get_int(b, "seed", -1, 0xffffffffLL).value_or(-1);
  if (rq.seed < 0) rq.seed = random_seed();
  rq.batch_size = (int)get_int(b, "batch_size", 1, lim.max_batch).value_or(1);
  rq.n_iter = (int)get_int(b, "n_iter", 1, lim.max_n_iter).value_or(1);
  if (rq.batch_size * rq.n_iter > lim.max_images)
    bad("n_iter", str("batch_size * n_iter must be at most ", lim.max_images, ", got ", rq.batch_size * rq.n_iter));
  if (auto s = get_str(b, "sampler_name", 100)) {
    if (!s->empty() && *s != "Euler" && *s != "euler" && *s != "k_euler")
      bad("sampler_name", "'" + *s + "' is not available: oboro samples with Euler (GET /sdapi/v1/samplers)");
  }
  if (auto s = get_str(b, "sampler_index", 100)) {
    if (!s->empty() && *s != "Euler" && *s != "euler" && *s != "k_euler")
      bad("sampler_index", "'" + *s + "' is not available: oboro samples with Euler (GET /sdapi/v1/samplers)");
  }
  if (has(b, "override_settings")) {
    const json& o = b.at("override_settings");
    if (!o.is_object()) bad("override_settings", "must be an object");
    if (auto m = get_str(o, "sd_model_checkpoint", 300)) p.model = clean_model_name(*m, "override_settings.sd_model_checkpoint");
  }
  if (auto m = get_str(b, "model", 300)) p.model = clean_model_name(*m, "model");
}

}  // namespace

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    // Text that is not UTF-8 (a prompt pasted from a Latin-1 file): 422 naming the field, not a JSON parser message.
    if (const size_t at = utf8_invalid_at(body); at != std::string::npos) {
      LastKey k;
      json::sax_parse(body, &k);
      const bool usable = !k.key_at_error.empty() && utf8_invalid_at(k.key_at_error) == std::string::npos;
      const std::string field = usable ? k.key_at_error : "body";
      // The key as the message shows it: plain when it is a plain name, else JSON-quoted (a key may hold NUL or a
      // newline, and the message must stay one line), at most 80 bytes.
      std::string shown = field;
      if (std::any_of(field.begin(), field.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f || c == '"'; }))
        shown = json(field).dump();
      if (shown.size() > 80) shown = shown.substr(0, 77) + "...";
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", (unsigned)(unsigned char)body[at]);
      throw RequestError(422, field, str(shown, ": not valid UTF-8 at byte ", at, " of the body (", hex,
                                         "); send the text as UTF-8"));
    }
    throw RequestError(400, "", std::string("the body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw RequestError(400, "", "the body must be a JSON object");
  return j;
}

std::string clean_model_name(const std::string& name, const std::string& field) {
  std::string s = name;
  if (s.size() > 200) bad(field, "model names are at most 200 bytes");
  if (auto br = s.find(" ["); br != std::string::npos && s.back() == ']') s = s.substr(0, br);  // A1111 title "name [hash]"
  const std::string ext = ".safetensors";
  if (s.size() > ext.size() && s.compare(s.size() - ext.size(), ext.size(), ext) == 0) s.resize(s.size() - ext.size());
  if (s.empty() || s.find('/') != std::string::npos || s.find('\\') != std::string::npos ||
      s.find("..") != std::string::npos || s.find('\0') != std::string::npos || s[0] == '.' || s[0] == '~')
    bad(field, "'" + name + "' is not a model name: use a name listed by GET /sdapi/v1/sd-models (no paths)");
  return s;
}

Image decode_b64_image(const std::string& text, const std::string& field) {
  std::string b = text;
  if (b.rfind("data:", 0) == 0) {
    const auto comma = b.find(',');
    if (comma == std::string::npos || b.substr(0, comma).find(";base64") == std::string::npos)
      bad(field, "a data URL must be data:image/...;base64,...");
    b = b.substr(comma + 1);
  }
  std::string bytes;
  try {
    bytes = base64_decode(b);
  } catch (const Error&) {
    bad(field, "is not valid base64");
  }
  if (bytes.empty()) bad(field, "the image is empty");
  try {
    return decode_image(bytes, field);
  } catch (const Error& e) {
    bad(field, std::string("is not a readable image (") + e.what() + ")");
  }
}

ParsedRequest parse_a1111(const json& b, const Limits& lim, bool require_init) {
  ParsedRequest p;
  parse_common(b, lim, p);
  GenerateRequest& rq = p.rq;
  if (has(b, "init_images")) {
    const json& ii = b.at("init_images");
    if (!ii.is_array()) bad("init_images", "must be a list of base64 images");
    if (ii.size() > 1) bad("init_images", "one init image per request");
    if (!ii.empty()) {
      if (!ii[0].is_string()) bad("init_images", "must be a list of base64 images");
      rq.init_image_data = decode_b64_image(ii[0].get<std::string>(), "init_images");
      p.img2img = true;
    }
  }
  if (require_init && !p.img2img) bad("init_images", "img2img needs one init image (base64)");
  if (has(b, "mask")) {  // inpainting (flow/inpaint.h): "original" fill over the whole picture, as A1111's defaults
    if (!p.img2img) bad("mask", "inpainting needs the image to repaint in init_images");
    if (!b.at("mask").is_string()) bad("mask", "must be a base64 image (white = repaint)");
    rq.mask_image_data = decode_b64_image(b.at("mask").get<std::string>(), "mask");
    rq.mask_blur = (int)get_int(b, "mask_blur", 0, 64).value_or(4);
    rq.invert_mask = get_int(b, "inpainting_mask_invert", 0, 1).value_or(0) == 1;
    if (get_int(b, "inpainting_fill", 0, 3).value_or(1) != 1)
      bad("inpainting_fill", "only 1 (\"original\") is supported: the masked region starts from the noised image");
    const json full = has(b, "inpaint_full_res") ? b.at("inpaint_full_res") : json(false);  // bool or 0/1
    if (!(full.is_boolean() || full.is_number())) bad("inpaint_full_res", "must be true/false or 0/1");
    if (full.is_boolean() ? full.get<bool>() : full.get<double>() != 0)
      bad("inpaint_full_res", "\"Only masked\" is not supported: inpainting runs on the whole picture");
  }
  const auto strength = get_num(b, "denoising_strength", 0.0, 1.0);
  if (p.img2img) {
    rq.strength = (float)strength.value_or(0.75);
  } else if (get_bool(b, "enable_hr").value_or(false)) {
    rq.hr_scale = (float)get_num(b, "hr_scale", 1.0, 4.0).value_or(2.0);
    rq.hr_resize_x = (int)get_int(b, "hr_resize_x", 0, lim.max_side).value_or(0);
    rq.hr_resize_y = (int)get_int(b, "hr_resize_y", 0, lim.max_side).value_or(0);
    if (rq.hr_resize_x > 0 || rq.hr_resize_y > 0) rq.hr_scale = 0;
    else if (std::max(rq.width, rq.height) * rq.hr_scale > lim.max_side) bad("hr_scale", str("the refined size must stay within ", lim.max_side, " pixels"));
    rq.hr_steps = (int)get_int(b, "hr_second_pass_steps", 0, lim.max_steps).value_or(0);
    rq.hr_upscaler = get_str(b, "hr_upscaler", 100).value_or("Latent");
    rq.hr_strength = (float)strength.value_or(0.7);
    if (rq.hr_strength <= 0) bad("denoising_strength", "must be above 0 for the refine pass");
    const std::vector<std::string> ups = {"Latent", "Latent (nearest)", "Latent (bilinear)", "Lanczos", "Nearest"};
    if (std::find(ups.begin(), ups.end(), rq.hr_upscaler) == ups.end())
      bad("hr_upscaler", "'" + rq.hr_upscaler + "' is not available: Latent, Latent (nearest), Lanczos or Nearest");
  }
  p.parameters = {{"prompt", rq.prompt}, {"negative_prompt", rq.negative_prompt}, {"steps", rq.steps},
                  {"cfg_scale", rq.cfg_scale}, {"width", rq.width}, {"height", rq.height}, {"seed", rq.seed},
                  {"batch_size", rq.batch_size}, {"n_iter", rq.n_iter}, {"sampler_name", "Euler"}};
  if (p.img2img) p.parameters["denoising_strength"] = rq.strength;
  if (rq.inpaint()) {
    p.parameters["mask_blur"] = rq.mask_blur;
    p.parameters["inpainting_mask_invert"] = rq.invert_mask ? 1 : 0;
    p.parameters["inpainting_fill"] = 1;
  }
  if (rq.hires()) {
    p.parameters["enable_hr"] = true;
    p.parameters["hr_scale"] = rq.hr_scale;
    p.parameters["hr_upscaler"] = rq.hr_upscaler;
    p.parameters["denoising_strength"] = rq.hr_strength;
  }
  if (!p.model.empty()) p.parameters["override_settings"] = {{"sd_model_checkpoint", p.model}};
  return p;
}

ParsedRequest parse_openai(const json& b, const Limits& lim, std::string& response_format) {
  ParsedRequest p;
  GenerateRequest& rq = p.rq;
  const auto prompt = get_str(b, "prompt");
  if (!prompt || prompt->empty()) bad("prompt", "is required");
  rq.prompt = *prompt;
  rq.batch_size = (int)get_int(b, "n", 1, lim.max_batch).value_or(1);
  if (auto size = get_str(b, "size", 32)) {
    int w = 0, h = 0;
    char tail = 0;
    if (std::sscanf(size->c_str(), "%dx%d%c", &w, &h, &tail) != 2 || w < 1 || h < 1 || w > lim.max_side || h > lim.max_side)
      bad("size", str("must be \"WxH\" with sides from 1 to ", lim.max_side, ", got '", *size, "'"));
    rq.width = w;
    rq.height = h;
  }
  response_format = get_str(b, "response_format", 32).value_or("b64_json");
  if (response_format != "b64_json" && response_format != "url") bad("response_format", "must be b64_json or url");
  if (auto m = get_str(b, "model", 300)) p.model = clean_model_name(*m, "model");
  rq.negative_prompt = get_str(b, "negative_prompt").value_or("");  // oboro extensions (A1111 names)
  rq.steps = (int)get_int(b, "steps", 1, lim.max_steps).value_or(rq.steps);
  rq.cfg_scale = (float)get_num(b, "cfg_scale", 0.0, 100.0).value_or(rq.cfg_scale);
  rq.seed = get_int(b, "seed", -1, 0xffffffffLL).value_or(-1);
  if (rq.seed < 0) rq.seed = random_seed();
  p.parameters = {{"prompt", rq.prompt}, {"n", rq.batch_size}, {"size", str(rq.width, "x", rq.height)},
                  {"seed", rq.seed}, {"steps", rq.steps}, {"cfg_scale", rq.cfg_scale}};
  return p;
}

}  // namespace oboro::serve
