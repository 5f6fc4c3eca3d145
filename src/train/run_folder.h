// The output folder of a training run, guarded (issue 21):
// - one run at a time: an flock on output_dir/.oboro.lock, held for the whole run (released by the kernel when
//   the process ends, however it ends); a second run into the folder is refused naming the holder's PID;
// - a new run (no --resume) does not write over an earlier run's model, checkpoints and log.jsonl unless asked
//   (TrainConfig::overwrite, `oboro train --overwrite`, which removes them first);
// - temp files of saves killed mid-write (io/atomic_file.h) are removed when the run starts;
// - a resume whose config changes a model setting of the checkpoint's run is refused naming the setting.
#pragma once
#include "train/train_config.h"
#include <string>
#include <vector>

namespace oboro {

class RunFolder {
 public:
  // Creates and locks cfg.output_dir, removes stale temp files in it and in its state/ and samples/ folders,
  // and for a new run (`resuming` false) refuses, or with cfg.overwrite removes, the files of an earlier run.
  RunFolder(const TrainConfig& cfg, bool resuming);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

 private:
  int fd_ = -1;  // the locked output_dir/.oboro.lock
};

// output_dir/.oboro.lock
std::string run_lock_path(const TrainConfig& cfg);
// The files of an earlier run in cfg.output_dir that a new run would write over or continue (model and text
// encoder files, log.jsonl, state/step-*.safetensors), existing ones only.
std::vector<std::string> earlier_run_files(const TrainConfig& cfg);
// The config keys that fix the model's shape or identity: a resume must keep them.
const std::vector<std::string>& model_setting_keys();
// Refuses (one error naming the key, both values and the fix) a resume from `state_path` whose checkpoint
// recorded a different value of a model setting than `cfg` has.
void check_resume_config(const std::string& state_path, const TrainConfig& cfg);

}  // namespace oboro
