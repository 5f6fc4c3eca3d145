// TEST HOOK (documented in docs/distributed.md; never set in a real run): makes one rank die or hang after a
// given optimizer step, so tests can check that the others notice within collective_timeout and that the
// supervisor restarts the run.
//   OBORO_TEST_FAULT=kill:RANK:STEP[:MARKER]   rank RANK SIGKILLs itself after step STEP
//   OBORO_TEST_FAULT=hang:RANK:STEP[:MARKER]   rank RANK sleeps forever after step STEP
// With MARKER (a file path) the fault fires only while MARKER does not exist, and creates it first: a restarted
// run (same environment) then passes the step.
#pragma once
#include <cstdint>

namespace oboro::dist {

void test_fault_point(int rank, int64_t step);

}  // namespace oboro::dist
