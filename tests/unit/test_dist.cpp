// src/dist (single process) and the loss-spike guard: the fixed reduction order and the spike rule.
#include "dist/communicator.h"
#include "dist/grad_sync.h"
#include "ops/backend.h"
#include "train/spike_guard.h"
#include "train/trainer.h"
#include "test_util.h"
#include <fstream>
#include <gtest/gtest.h>
#include <cmath>
#include <cstring>
#include <limits>

namespace oboro {
namespace {

TEST(Dist, SingleProcessOrderedSumIsTheLeftFold) {
  // Values where the grouping changes the F32 result: (a + b) + c != a + (b + c).
  const float a[2] = {1e8f, 1.f}, b[2] = {-1e8f, 1e-8f}, c[2] = {1.f, 3.f};
  const float* parts[3] = {a, b, c};
  float out[2];
  dist::SingleProcess one;
  one.ordered_sum(parts, 3, out, 2);
  const float want0 = (a[0] + b[0]) + c[0], want1 = (a[1] + b[1]) + c[1];
  EXPECT_EQ(std::memcmp(&out[0], &want0, 4), 0);
  EXPECT_EQ(std::memcmp(&out[1], &want1, 4), 0);
  EXPECT_EQ(out[0], 1.f);  // the left fold; a + (b + c) would give 0
  double d = 2.5;
  one.allreduce_sum(&d, 1);
  EXPECT_EQ(d, 2.5);
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.size(), 1);
}

TEST(Dist, GradientSumFoldsMicroBatchesInOrderThroughTheBackend) {
  Backend& be = cpu_backend();
  Buffer g = be.alloc(2, DType::F32, "grads");
  dist::SingleProcess one;
  dist::GradientSum sum(be, one, 3);
  EXPECT_FALSE(sum.passthrough());
  const float micro[3][2] = {{1e8f, 1.f}, {-1e8f, 2.f}, {1.f, 3.f}};
  for (int a = 0; a < 3; ++a) {
    be.upload(g.f32(), micro[a], 2);
    sum.collect(a, {{g.f32(), 2}});
  }
  sum.reduce({{g.f32(), 2}});
  float out[2];
  be.download(out, g.f32(), 2);
  EXPECT_EQ(out[0], 1.f);
  EXPECT_EQ(out[1], 6.f);
  EXPECT_EQ(sum.sum_losses({0.5, 0.25, 0.25}), 1.0);
  EXPECT_TRUE(dist::GradientSum(be, one, 1).passthrough());
}

TEST(SpikeGuard, NonFiniteAndAboveKTimesTheMedian) {
  TrainConfig c;
  c.spike_max_rollbacks = 1;
  c.spike_factor = 3;
  c.spike_window = 3;
  SpikeGuard g(c);
  EXPECT_NE(g.check(1, std::nan(""), 1), "");
  EXPECT_NE(g.check(1, 1, std::numeric_limits<double>::infinity()), "");
  EXPECT_EQ(g.check(1, 1.0, 1), "");
  EXPECT_EQ(g.check(2, 100.0, 1), "");  // the window is not full yet: no median rule
  EXPECT_EQ(g.check(3, 1.2, 1), "");
  EXPECT_EQ(g.check(4, 3.5, 1), "");    // median of {1, 100, 1.2} = 1.2: 3.5 < 3.6
  EXPECT_NE(g.check(5, 10.6, 1), "");   // median of {100, 1.2, 3.5} = 3.5: 10.6 > 10.5
  EXPECT_TRUE(g.rollback(5, 3));
  EXPECT_TRUE(g.skip_data_at(5));
  EXPECT_FALSE(g.skip_data_at(5));
  EXPECT_FALSE(g.rollback(5, 3));  // budget of 1 spent
}

TEST(Dist, ConfigKeysAreReadAndChecked) {
  const std::filesystem::path d = test::process_tmpdir("oboro_dist_cfg");
  std::ofstream(d / "run.toml") << "train_data_dir = \"x\"\ncollective_timeout = 2.5\nnotify_url = \"http://h/x\"\n"
                                   "spike_max_rollbacks = 3\nspike_factor = 4\nspike_window = 7\nspike_lr_factor = 0.25\n";
  const TrainConfig c = TrainConfig::from_toml((d / "run.toml").string());
  EXPECT_EQ(c.collective_timeout, 2.5);
  EXPECT_EQ(c.notify_url, "http://h/x");
  EXPECT_EQ(c.spike_max_rollbacks, 3);
  EXPECT_EQ(c.spike_factor, 4);
  EXPECT_EQ(c.spike_window, 7);
  EXPECT_EQ(c.spike_lr_factor, 0.25);
  EXPECT_EQ(c.to_json().find("collective_timeout"), std::string::npos);  // not a weight-shaping setting
  EXPECT_EQ(global_batch(c, 4), 4 * 16 * 1);
  auto error_of = [&](const std::function<void(TrainConfig&)>& edit) {
    TrainConfig b = c;
    edit(b);
    return test::error_of([&] { b.validate(); });
  };
  EXPECT_NE(error_of([](TrainConfig& b) { b.collective_timeout = 0; }).find("collective_timeout"), std::string::npos);
  EXPECT_NE(error_of([](TrainConfig& b) { b.spike_factor = 0.5; }).find("spike_factor"), std::string::npos);
  EXPECT_NE(error_of([](TrainConfig& b) { b.spike_lr_factor = 2; }).find("spike_lr_factor"), std::string::npos);
  EXPECT_EQ(error_of([](TrainConfig&) {}), "(no error)");
}

}  // namespace
}  // namespace oboro
