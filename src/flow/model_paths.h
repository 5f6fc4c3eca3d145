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

// The FLUX VAE when --vae is not given: models_dir/vae/ae.safetensors, or the only .safetensors file in
// models_dir/vae. "" when there is none (the caller's error says to pass --vae).
std::string default_vae(const std::string& models_dir);

}  // namespace oboro
