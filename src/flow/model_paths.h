// Where model files are found: a path as given, or a bare file name looked up in a ComfyUI-style models folder
// (DIR/diffusion_models, DIR/text_encoders, DIR/vae) given by --models-dir or $OBORO_MODELS_DIR.
#pragma once
#include <string>

namespace oboro {

// The models folder: `flag` when set, else $OBORO_MODELS_DIR, else "".
std::string models_dir_or_env(const std::string& flag);

// `given` when it exists (file or folder); else, for a bare name (no '/'), models_dir/sub/given and
// models_dir/sub/given.safetensors. Fails with one message naming `what` (e.g. "--vae") and every place it looked,
// and how to fix it. `given` empty is an internal error.
std::string locate_model(const std::string& given, const std::string& models_dir, const std::string& sub,
                         const std::string& what);

// A file a model's metadata names (`key`, e.g. oboro.text_encoder): metadata comes with a downloaded file, so it may
// only name a file inside the model's own folder — a plain file name or a relative path without "." / ".." parts,
// never an absolute path — looked up beside the model, then (a bare name) in models_dir/sub. Fails naming the model,
// the key and the fix (pass the file with a flag) for anything else, before the path is opened.
std::string locate_named_by_model(const std::string& named, const std::string& model, const std::string& key,
                                  const std::string& models_dir, const std::string& sub);

// The FLUX VAE when --vae is not given: models_dir/vae/ae.safetensors, or the only .safetensors file in
// models_dir/vae. "" when there is none (the caller's error says to pass --vae).
std::string default_vae(const std::string& models_dir);

}  // namespace oboro
