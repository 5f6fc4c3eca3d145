// CheckedBackend: a decorator over the CPU backend that makes the device seam testable on a machine without a
// device (`--backend checked` on every command). It owns its own allocations and fails loudly when the seam is
// crossed any other way than through upload/download:
//   - every op checks that each pointer it receives lies inside memory this backend allocated (or host memory
//     wrapped with wrap_host); otherwise it stops with one line naming the op and the argument;
//   - uploads, downloads, copies and zeroing check the whole byte range;
//   - between ops every allocation is poisoned (mprotect PROT_NONE): host code that reads or writes a backend
//     buffer without a download faults, and the fault handler names the buffer (its `what`) and the offset, then
//     exits with status 3. During an op only that op's arguments are accessible.
// Results are bitwise those of the wrapped backend (the decorator touches no data). Ops are serialised (one at a
// time, whatever thread calls). Memory is page-granular (every buffer takes whole pages), so it is for tests and
// checks, not for production runs.
#pragma once
#include "ops/backend.h"
#include <memory>

namespace oboro {

// The checked backend over `inner` (which must be able to run ops on host memory: the CPU backend).
std::unique_ptr<Backend> make_checked_backend(Backend& inner);

}  // namespace oboro
