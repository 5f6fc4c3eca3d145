// Test hook for the crash-point tests (tests/crash/): named moments of the save paths where a test can have the
// process SIGKILLed. OBORO_CRASH_AT="NAME#N" kills the process at the N-th time it reaches crash point NAME
// (N = 1 when omitted); without the variable a crash point costs one branch. Names in use:
//   atomic.open     temp file created, nothing written        atomic.write   after the first write() of the data
//   atomic.fsync    data written, before fsync                atomic.rename  fsync done, before rename
//   atomic.renamed  renamed, before the directory fsync
// (every atomic save: io/atomic_file.h), and train.saved (after a checkpoint and the model files are written).
#pragma once

namespace oboro {

void crash_point(const char* name);

}  // namespace oboro
