// Shared pieces of the `oboro bench ...` commands: clocks, memory readings, the machine's SGEMM peak through the
// engine's own GEMM path, and running a PyTorch twin benchmark script that prints one JSON object.
#pragma once
#include "models/t5.h"
#include "ops/backend.h"
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#ifndef OBORO_SOURCE_DIR
#define OBORO_SOURCE_DIR "."
#endif

namespace oboro::cli {

double bench_now();                 // steady clock, seconds
size_t peak_rss_bytes();            // VmHWM of this process
size_t current_rss_bytes();         // VmRSS of this process
bool reset_peak_rss();              // VmHWM := VmRSS (Linux ≥ 4.0: "5" > /proc/self/clear_refs); false if refused
std::string load_average();         // "/proc/loadavg" first three fields, e.g. "2.10 1.95 1.60"

// Best-of-3 SGEMM rate at n×n×n through be.linear_forward (OpenBLAS kernels split over the thread pool on the CPU
// backend), after one warm-up call, so "% of peak" compares like with like.
double sgemm_peak_gflops(Backend& be, int n = 2048);

// A PyTorch twin: check that `python` can import torch (else fail with how to install it), run
// `python script args`, and parse the last JSON object it prints on stdout. `what` names it in errors.
void require_python_torch(const std::string& python);
nlohmann::json run_twin_script(const std::string& python, const std::string& script, const std::string& args,
                               const char* what);

// A random T5 (T5Encoder::init_weights' scales) written to `path` with its quantisable Linear weights in `fmt`, tensor
// by tensor, so the F32 model never exists in memory (T5-XXL: 19 GB).
void write_t5_quantized(const std::string& path, const T5Config& c, WFormat fmt,
                        const std::map<std::string, std::string>& meta);

}  // namespace oboro::cli
