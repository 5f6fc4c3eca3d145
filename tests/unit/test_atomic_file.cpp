// The atomic writer (src/io/atomic_file.*): a plain write leaves only the final file; files staged together
// (StagedFiles) are written in place under their one temp name, appear together at commit(), and vanish when
// not committed; a failing body leaves the old file as it was and no temp; errors name the final file.
#include "core/error.h"
#include "io/atomic_file.h"
#include "test_util.h"
#include <gtest/gtest.h>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <vector>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace oboro;
using oboro::test::dead_pid;
using oboro::test::error_of;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  fs::path d = oboro::test::process_tmpdir("oboro_atomic") / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST(AtomicFile, APlainWriteGoesThroughOneTempAndLeavesOnlyTheFile) {
  const fs::path dir = scratch("plain");
  const std::string path = (dir / "a.json").string();
  const std::string tmp = atomic_temp_path(path, (long)::getpid());
  std::set<std::string> during;
  write_atomic(path, [&](const AtomicPut& put) {
    put("{}", 2);
    during = names_in(dir);
  });
  EXPECT_EQ(during, std::set<std::string>{fs::path(tmp).filename().string()});
  EXPECT_EQ(names_in(dir), std::set<std::string>{"a.json"});
  EXPECT_EQ(slurp(path), "{}");
}

TEST(AtomicFile, StagedFilesAreWrittenInPlaceAndAppearTogetherAtCommit) {
  const fs::path dir = scratch("staged");
  const std::string model = (dir / "m.safetensors").string(), te = (dir / "m.t5.safetensors").string();
  write_file_atomic(model, "old model");
  std::set<std::string> during;
  {
    StagedFiles files;
    const std::string staged_model = files.stage(model), staged_te = files.stage(te);
    write_atomic(staged_model, [&](const AtomicPut& put) {
      put("new model", 9);
      during = names_in(dir);  // the staged temp itself, no temp of the temp ("x.tmp.PID.tmp.PID")
    });
    write_file_atomic(staged_te, "new te");
    EXPECT_EQ(slurp(model), "old model");  // nothing replaced before commit()
    EXPECT_FALSE(fs::exists(te));
    files.commit();
  }
  const std::string pid = std::to_string((long)::getpid());
  EXPECT_EQ(during, (std::set<std::string>{"m.safetensors", "m.safetensors.tmp." + pid}));
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"m.safetensors", "m.t5.safetensors"}));
  EXPECT_EQ(slurp(model), "new model");
  EXPECT_EQ(slurp(te), "new te");
}

TEST(AtomicFile, AnUncommittedOrFailedStageLeavesTheOldFilesAndNoTemp) {
  const fs::path dir = scratch("failed");
  const std::string model = (dir / "m.safetensors").string();
  write_file_atomic(model, "old model");
  {
    StagedFiles files;
    write_file_atomic(files.stage(model), "half");  // never committed (an exception on the way, say)
  }
  EXPECT_EQ(names_in(dir), std::set<std::string>{"m.safetensors"});
  EXPECT_THROW(
      {
        StagedFiles files;
        write_atomic(files.stage(model), [](const AtomicPut& put) {
          put("part", 4);
          throw Error("the writer failed half-way");  // as a SafetensorsWriter does on a bad tensor
        });
      },
      Error);
  EXPECT_EQ(names_in(dir), std::set<std::string>{"m.safetensors"});
  EXPECT_EQ(slurp(model), "old model");
}

TEST(AtomicFile, AWriteIntoAMissingFolderNamesTheFinalFileNotTheTemp) {
  const fs::path dir = scratch("missing");
  const std::string model = (dir / "nowhere" / "m.safetensors").string();
  StagedFiles files;
  const std::string msg = error_of([&] { write_file_atomic(files.stage(model), "x"); });
  EXPECT_EQ(msg.rfind(model + ": cannot write", 0), 0u) << msg;
  EXPECT_NE(msg.find("does the directory exist?"), std::string::npos) << msg;
}

TEST(AtomicFile, AStagedFileWrittenAgainIsANewFileSoAReaderOfTheFirstKeepsIt) {
  // A writer may read back what it staged and write the file again (a mapped safetensors file, say): the mapping
  // of the first version must not change under it.
  const fs::path dir = scratch("rewrite");
  StagedFiles files;
  const std::string staged = files.stage((dir / "te.safetensors").string());
  write_file_atomic(staged, "first");
  const int fd = ::open(staged.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* map = ::mmap(nullptr, 5, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(map, MAP_FAILED);
  write_file_atomic(staged, "SECOND");
  EXPECT_EQ(std::string(static_cast<const char*>(map), 5), "first");
  ::munmap(map, 5);
  files.commit();
  EXPECT_EQ(slurp(dir / "te.safetensors"), "SECOND");
}

TEST(AtomicFile, ARenameThatFailsInCommitPutsBackTheFilesRenamedBeforeIt) {
  const fs::path dir = scratch("commit_fails");
  const std::string te = (dir / "m.t5.safetensors").string(), model = (dir / "m.safetensors").string();
  const std::string added = (dir / "extra.json").string();
  write_file_atomic(te, "old te");
  write_file_atomic(model, "old model");
  const std::string msg = error_of([&] {
    StagedFiles files;
    write_file_atomic(files.stage(te), "new te");
    write_file_atomic(files.stage(added), "new file");
    const std::string staged_model = files.stage(model);
    write_file_atomic(staged_model, "new model");
    fs::remove(staged_model);  // its rename will fail (ENOENT), after the first two went through
    files.commit();
  });
  EXPECT_EQ(msg.rfind(model + ": cannot write: renaming", 0), 0u) << msg;
  EXPECT_EQ(slurp(te), "old te");  // put back
  EXPECT_EQ(slurp(model), "old model");
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"m.safetensors", "m.t5.safetensors"}));  // no new file, no temp
}

TEST(AtomicFile, TheStaleTempsOfOneFileAreRemovedWithTheirSqliteCompanionsAndNothingElse) {
  const fs::path dir = scratch("stale_of");
  const std::string dead = std::to_string(dead_pid());
  for (const std::string& n : std::vector<std::string>{"m.db.tmp." + dead, "m.db.tmp." + dead + "-wal", "m.db.tmp." + dead + "-shm",
                               "m.db.tmp.1",                  // PID 1 is alive
                               "other.db.tmp." + dead,        // another file's temp
                               "m.db.tmp." + dead + "-notes", // not a temp's shape
                               "m.db"})
    std::ofstream(dir / n) << "x";
  EXPECT_EQ(remove_stale_temps_of((dir / "m.db").string()), 3);
  EXPECT_EQ(names_in(dir), (std::set<std::string>{"m.db", "m.db.tmp.1", "other.db.tmp." + dead,
                                                  "m.db.tmp." + dead + "-notes"}));
}
