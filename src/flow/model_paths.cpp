#include "flow/model_paths.h"
#include "core/error.h"
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace oboro {

namespace fs = std::filesystem;

std::string models_dir_or_env(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* e = std::getenv("OBORO_MODELS_DIR")) return e;
  return "";
}

std::string locate_model(const std::string& given, const std::string& models_dir, const std::string& sub,
                         const std::string& what) {
  if (given.empty()) fail("internal error: no ", what, " to locate");
  std::error_code ec;
  std::vector<fs::path> tried{fs::path(given)};
  const bool bare = given.find('/') == std::string::npos;
  if (bare && !models_dir.empty()) {
    tried.push_back(fs::path(models_dir) / sub / given);
    if (fs::path(given).extension() != ".safetensors") tried.push_back(fs::path(models_dir) / sub / (given + ".safetensors"));
  }
  for (const auto& p : tried)
    if (fs::exists(p, ec)) return p.string();
  std::string list;
  for (const auto& p : tried) list += "\n  " + fs::absolute(p, ec).string();
  std::string fix;
  if (!bare)
    fix = "check the path";
  else if (models_dir.empty())
    fix = str("pass a path, or put the file in DIR/", sub, " and pass --models-dir DIR (or set OBORO_MODELS_DIR)");
  else
    fix = str("pass a path, or put the file in ", (fs::path(models_dir) / sub).string());
  fail(what, " ", given, ": not found; looked in:", list, "\n", fix);
}

std::string locate_named_by_model(const std::string& named, const std::string& model, const std::string& key,
                                  const std::string& models_dir, const std::string& sub) {
  const fs::path rel(named);
  bool ok = !named.empty() && named.size() <= 1024 && rel.is_relative() && !rel.has_root_name() &&
            named.find('\0') == std::string::npos && named.find('\\') == std::string::npos;
  for (const auto& part : rel)
    if (part == ".." || part == "." || part.empty()) ok = false;
  if (!ok)
    fail(model, ": metadata '", key, "' = '", named, "' is not a file name inside the model's folder (no absolute paths, "
         "no '..'): the file may be tampered with; pass the text encoder yourself with --t5 FILE");
  std::error_code ec;
  const fs::path beside = fs::path(model).parent_path() / rel;
  if (fs::exists(beside, ec)) return beside.string();
  if (named.find('/') == std::string::npos && !models_dir.empty()) return locate_model(named, models_dir, sub, str("'", key, "'"));
  fail(model, ": metadata '", key, "' names '", named, "', which is not in the model's folder (",
       fs::absolute(beside, ec).string(), "): put it there, or pass it with --t5 FILE",
       models_dir.empty() ? str(" (or put it in DIR/", sub, " and pass --models-dir DIR)") : "");
}

std::string default_vae(const std::string& models_dir) {
  if (models_dir.empty()) return "";
  std::error_code ec;
  const fs::path dir = fs::path(models_dir) / "vae";
  if (fs::is_regular_file(dir / "ae.safetensors", ec)) return (dir / "ae.safetensors").string();
  std::vector<fs::path> found;
  if (fs::is_directory(dir, ec))
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".safetensors") found.push_back(e.path());
  return found.size() == 1 ? found[0].string() : "";
}

}  // namespace oboro
