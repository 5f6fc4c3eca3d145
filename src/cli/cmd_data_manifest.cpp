// `oboro data ...` commands on the manifest, SQLite file or PostgreSQL (docs/data.md):
//   ingest DIR|TOML --manifest M.db [--license SPDX]     dedup --manifest M.db [--eps 0.1]
//   list --manifest M.db [--status active|removed]       score --manifest M.db --scores FILE
//   bucket --manifest M.db --stage 1|2 [--dry-run]        cache --manifest M.db --out DIR --codec pixels
//   export --manifest M.db -o DIR                         register-model MODEL --manifest M.db
//   audit MODEL [--manifest M.db]                         remove --manifest M.db --hash H --reason TEXT
//   stats --manifest M.db                                 synth -o DIR -n N (generated test images)
// Registered on the `data` group from main.cpp.
#include "cli/commands.h"
#include "cli/validators.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/audit.h"
#include "data/buckets.h"
#include "data/cache.h"
#include "data/dedup.h"
#include "data/manifest.h"
#include "data/quality.h"
#include "data/synth.h"

#include <cstdio>
#include <ctime>
#include <memory>
#include <string>

namespace oboro::cli {
namespace {

void threads_option(CLI::App* c, int* threads) {
  c->add_option("--threads", *threads, "worker threads (default: all cores)")
      ->check(int_in(1, 1024));
}
void apply_threads(int threads) {
  if (threads > 0) set_num_threads(threads);
}

void register_ingest(CLI::App& data) {
  struct Opts {
    std::string source, manifest, license, allow, extractor = "dct-colour", shard;
    int batch = 256, threads = 0;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("ingest", "Add a folder of images (sidecar .txt captions, .license files or a manifest.jsonl) "
                                          "or a kohya dataset .toml to the manifest; re-running skips unchanged images");
  c->add_option("source", o->source, "folder of images, or a kohya dataset .toml")->required();
  c->add_option("--manifest", o->manifest, "the manifest (SQLite) file; created when missing")->required();
  c->add_option("--license", o->license, "SPDX licence for images with no licence of their own (manifest.jsonl or "
                                         "<image>.license)");
  c->add_option("--allow-licenses", o->allow, "licence allow-list, comma-separated SPDX ids (stored in the manifest; "
                                              "default CC0-1.0,CC-BY-4.0,CC-BY-SA-4.0,Apache-2.0,MIT)");
  c->add_option("--extractor", o->extractor, "embedding extractor for dedup")->capture_default_str();
  c->add_option("--shard", o->shard, "i/n: this process handles 1/n of the files (run n processes), or mpi (rank and "
                                     "size from mpirun)");
  c->add_option("--batch", o->batch, "images per transaction")->capture_default_str()
      ->check(int_in(1, 100000));
  threads_option(c, &o->threads);
  c->add_flag("--quiet,-q", o->quiet, "no progress bar");
  c->callback([o] {
    apply_threads(o->threads);
    IngestOptions io;
    io.source = o->source;
    io.default_license = o->license;
    if (!o->allow.empty()) io.policy = LicencePolicy::parse(o->allow);
    io.extractor = o->extractor;
    io.shard = ShardSpec::parse(o->shard);
    io.batch = o->batch;
    io.progress = !o->quiet;
    auto m = Manifest::open(o->manifest, true);
    const IngestReport r = ingest(*m, io);
    const int64_t done = r.added + r.updated;
    std::printf("ingested %s into %s: %lld images found, %lld added, %lld updated, %lld unchanged (skipped)%s in %.1f s "
                "(%.0f images/s)\n",
                o->source.c_str(), sql::display_name(o->manifest).c_str(), (long long)r.found, (long long)r.added, (long long)r.updated,
                (long long)r.unchanged,
                r.other_shard ? (", " + std::to_string(r.other_shard) + " left to other shards").c_str() : "", r.seconds,
                r.seconds > 0 ? done / r.seconds : 0.0);
    std::printf("  time: %.1f s scanning (stat, sidecars, lookups), %.1f s reading/decoding/hashing/embedding, %.1f s "
                "writing the manifest\n",
                r.scan_seconds, r.decode_seconds, r.write_seconds);
    if (r.shards_taken_over)
      std::printf("  took over %d shard(s) whose worker had stopped before finishing\n", r.shards_taken_over);
    std::printf("  this run: %lld active; removed %lld corrupt, %lld without a licence, %lld licence not allowed (policy %s), "
                "%lld content mismatch\n  manifest: %lld images, %lld active\n",
                (long long)r.active, (long long)r.corrupt, (long long)r.no_licence, (long long)r.not_allowed,
                m->policy().str().c_str(), (long long)r.mismatch, (long long)m->count(), (long long)m->count("status='active'"));
    if (r.no_licence) {
      std::printf("images without a licence (excluded; add <image>.license, a manifest.jsonl, or pass --license SPDX):\n");
      for (const auto& p : r.no_licence_paths) std::printf("  %s\n", p.c_str());
      if (r.no_licence > (int64_t)r.no_licence_paths.size())
        std::printf("  ... and %lld more: oboro data list --manifest %s --status removed --reason \"no licence\"\n",
                    (long long)(r.no_licence - (int64_t)r.no_licence_paths.size()), sql::display_name(o->manifest).c_str());
    }
    if (r.not_allowed) {
      std::printf("images whose licence is not in the allow-list (excluded; widen it with --allow-licenses):\n");
      for (const auto& p : r.not_allowed_paths) std::printf("  %s\n", p.c_str());
      if (r.not_allowed > (int64_t)r.not_allowed_paths.size())
        std::printf("  ... and %lld more: oboro data list --manifest %s --status removed --reason licence\n",
                    (long long)(r.not_allowed - (int64_t)r.not_allowed_paths.size()), sql::display_name(o->manifest).c_str());
    }
  });
}

void register_dedup(CLI::App& data) {
  struct Opts {
    std::string manifest, extractor = "dct-colour";
    DedupOptions d;
    int threads = 0;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("dedup", "Remove near-duplicates: embeddings, subsets, DBSCAN (cosine) per subset, keep one "
                                         "random member per cluster plus noise, repeat until the kept set stops changing");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--eps", o->d.eps, "DBSCAN radius as cosine distance (0.1 = similarity 0.9, the report's value)")
      ->capture_default_str()
      ->check(real_in(0, 2, true, " (cosine distance)"));
  c->add_option("--min-samples", o->d.min_samples, "DBSCAN min_samples, counting the point itself")->capture_default_str()
      ->check(int_in(1, 1000000));
  c->add_option("--subset-size", o->d.subset_size, "images per subset")->capture_default_str()
      ->check(int_in(2, 1000000000));
  c->add_option("--split", o->d.split, "graph: subsets from whole LSH neighbour components (no pair is cut); random: "
                                       "the report's random subsets")
      ->check(CLI::IsMember({"graph", "random"}))
      ->capture_default_str();
  c->add_option("--index", o->d.index, "neighbour search within random subsets: lsh or exact (all pairs, SGEMM)")
      ->check(CLI::IsMember({"lsh", "exact"}))
      ->capture_default_str();
  c->add_option("--lsh-tables", o->d.lsh_tables, "LSH hash tables")->capture_default_str()
      ->check(int_in(1, 256));
  c->add_option("--lsh-bits", o->d.lsh_bits, "bits per LSH table (0: about 4 images per bucket)")
      ->capture_default_str()
      ->check(int_in(0, 30, " (0 = automatic)"));
  c->add_option("--seed", o->d.seed, "seed of the kept-member choice and of the LSH hyperplanes")->capture_default_str()
      ->check(int_in(0, 4294967295));
  c->add_option("--max-rounds", o->d.max_rounds, "stop after this many rounds")->capture_default_str()
      ->check(int_in(1, 100000));
  c->add_option("--extractor", o->extractor, "embedding extractor")->capture_default_str();
  threads_option(c, &o->threads);
  c->add_flag("--quiet,-q", o->quiet, "no progress lines");
  c->callback([o] {
    apply_threads(o->threads);
    auto m = Manifest::open(o->manifest, false);
    o->d.progress = !o->quiet;
    const ManifestDedupReport r = dedup_manifest(*m, o->d, o->extractor);
    std::printf("dedup %s: %lld active images, %lld removed as near-duplicates (eps %g, %zu rounds), %lld kept, %.1f s\n",
                sql::display_name(o->manifest).c_str(), (long long)r.images, (long long)r.removed, o->d.eps, r.rounds.size(),
                (long long)(r.images - r.removed - r.unreadable), r.seconds);
    if (r.embedded) std::printf("  computed %lld embeddings that were missing\n", (long long)r.embedded);
    if (r.unreadable) std::printf("  %lld images could not be read and were left out\n", (long long)r.unreadable);
  });
}

void register_list(CLI::App& data) {
  struct Opts {
    std::string manifest, status, reason;
    bool long_ = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("list", "Print image paths, one per line");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--status", o->status, "only active or only removed images")->check(CLI::IsMember({"active", "removed"}));
  c->add_option("--reason", o->reason, "only removed images whose reason contains this text (e.g. \"no licence\")");
  c->add_flag("--long,-l", o->long_, "tab-separated: sha256, status, licence, WxH, quality, reason, path");
  c->callback([o] {
    auto m = Manifest::open(o->manifest, false);
    std::string q = "SELECT path, sha256, status, license, width, height, quality, reason FROM images";
    if (!o->status.empty()) q += " WHERE status=?";
    q += " ORDER BY id";
    sql::Stmt s(m->db(), q);
    if (!o->status.empty()) s.bind(1, o->status);
    while (s.step()) {
      if (!o->reason.empty() && s.text(7).find(o->reason) == std::string::npos) continue;  // case-sensitive, both backends
      if (o->long_)
        std::printf("%s\t%s\t%s\t%lldx%lld\t%s\t%s\t%s\n", s.text(1).c_str(), s.text(2).c_str(), s.text(3).c_str(),
                    (long long)s.i64(4), (long long)s.i64(5), s.text(6).c_str(), s.text(7).c_str(), s.text(0).c_str());
      else
        std::printf("%s\n", s.text(0).c_str());
    }
  });
}

void register_stats(CLI::App& data) {
  auto manifest = std::make_shared<std::string>();
  auto* c = data.add_subcommand("stats", "Counts by status, removal reason, licence, source, quality tag and bucket");
  c->add_option("--manifest", *manifest, "the manifest file")->required();
  c->callback([manifest] {
    auto m = Manifest::open(*manifest, false);
    auto group = [&](const char* title, const std::string& q) {
      std::printf("%s:\n", title);
      sql::Stmt s(m->db(), q);
      while (s.step()) std::printf("  %-40s %lld\n", s.text(0).empty() ? "(none)" : s.text(0).c_str(), (long long)s.i64(1));
    };
    std::printf("%s: %lld images, %lld active; licence policy %s; quality tags %s\n", sql::display_name(*manifest).c_str(),
                (long long)m->count(), (long long)m->count("status='active'"), m->policy().str().c_str(),
                m->meta("quality_tags").c_str());
    group("removed by reason", "SELECT reason_kind, count(*) FROM images WHERE status='removed' GROUP BY 1 ORDER BY 2 DESC, 1");
    group("active by licence", "SELECT license, count(*) FROM images WHERE status='active' GROUP BY 1 ORDER BY 2 DESC, 1");
    group("active by source", "SELECT source, count(*) FROM images WHERE status='active' GROUP BY 1 ORDER BY 2 DESC, 1");
    group("active by quality tag", "SELECT quality, count(*) FROM images WHERE status='active' GROUP BY 1 ORDER BY 2 DESC, 1");
    group("active by bucket", "SELECT 'stage ' || b.stage || ' ' || b.width || 'x' || b.height, count(*) FROM buckets b JOIN "
                              "images i ON i.id=b.image_id WHERE i.status='active' GROUP BY 1 ORDER BY 1");
    group("cache entries", "SELECT kind, count(*) FROM cache_entries GROUP BY 1 ORDER BY 1");
    group("exports", "SELECT dir || ' ' || digest, images FROM exports ORDER BY id");
    group("models", "SELECT path || ' (' || linked_by || ')', images FROM models ORDER BY id");
  });
}

void register_score(CLI::App& data) {
  struct Opts {
    std::string manifest, thresholds;
    ScoreOptions s;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("score", "Quality tags from aesthetic scores: >= 6 excellent score, >= 5.2 good score, "
                                         ">= 4 average score, < 4 removed");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--scores", o->s.file, "CSV (sha256_or_path,score) or JSONL ({\"sha256\": ..., \"score\": x})");
  c->add_option("--scorer", o->s.scorer, "a scorer plug-in instead of a file");
  c->add_option("--name", o->s.name, "score name stored in the scores table")->capture_default_str();
  c->add_option("--thresholds", o->thresholds, "excellent,good,average (default 6,5.2,4)");
  c->add_option("--tags", o->s.tags, "how the tag joins the training caption: append (default), prepend or off")
      ->check(CLI::IsMember({"append", "prepend", "off"}));
  c->callback([o] {
    if (!o->thresholds.empty()) o->s.thresholds = QualityThresholds::parse(o->thresholds);
    auto m = Manifest::open(o->manifest, false);
    const ScoreReport r = apply_scores(*m, o->s);
    std::printf("scored %lld images from %lld records: %lld excellent, %lld good, %lld average, %lld below %g (removed); "
                "%lld restored; tags %s\n",
                (long long)r.matched_images, (long long)r.records, (long long)r.excellent, (long long)r.good,
                (long long)r.average, (long long)r.excluded, o->s.thresholds.average, (long long)r.restored,
                m->meta("quality_tags").c_str());
    if (r.unmatched) {
      std::printf("%lld records matched no image (by sha256 or path):\n", (long long)r.unmatched);
      for (const auto& k : r.unmatched_keys) std::printf("  %s\n", k.c_str());
    }
  });
}

void register_bucket(CLI::App& data) {
  struct Opts {
    std::string manifest;
    BucketOptions b;
    bool dry_run = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("bucket", "Assign training buckets: stage 1 = 256² random crops, stage 2 = ~512² area, "
                                          "aspect <= 1.3, sides multiples of 64; never upscales by default");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--stage", o->b.stage, "1 or 2")->required()->check(CLI::IsMember({1, 2}));
  c->add_flag("--dry-run", o->dry_run, "print every image's bucket and crop; change nothing");
  c->add_flag("--upscale", o->b.upscale, "allow upscaling small images to the full bucket");
  c->add_option("--seed", o->b.seed, "seed of the stage-1 random crops")->capture_default_str()
      ->check(int_in(0, 4294967295));
  c->callback([o] {
    auto m = Manifest::open(o->manifest, false);
    const BucketReport r = assign_buckets(*m, o->b, o->dry_run, [&](const std::string& l) {
      if (o->dry_run) std::printf("%s\n", l.c_str());
    });
    std::fprintf(o->dry_run ? stderr : stdout, "stage %d: %lld images, %lld bucketed%s, %lld too small%s\n", o->b.stage,
                 (long long)r.images, (long long)r.bucketed,
                 o->dry_run ? " (dry run: nothing stored)" : (" (" + std::to_string(r.changed) + " changed)").c_str(),
                 (long long)r.too_small, o->b.upscale ? "" : " (no upscaling; --upscale allows it)");
    for (const auto& [k, n] : r.per_bucket) std::fprintf(o->dry_run ? stderr : stdout, "  %-10s %lld\n", k.c_str(), (long long)n);
  });
}

void register_cache(CLI::App& data) {
  struct Opts {
    std::string manifest, shard;
    CacheOptions c;
    int shard_mb = 256, threads = 0;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("cache", "Encode every active image once into sharded safetensors latent (and text "
                                         "encoder) caches, keyed by content + bucket + codec/encoder; re-runs skip done work");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--out", o->c.out_dir, "cache folder")->required();
  c->add_option("--stage", o->c.stage, "bucket stage to encode")->check(CLI::IsMember({1, 2}))->capture_default_str();
  c->add_option("--codec", o->c.codec, "latent codec: pixels or flux-vae")->check(CLI::IsMember({"pixels", "flux-vae"}))
      ->capture_default_str();
  c->add_option("--vae", o->c.vae, "FLUX.1 VAE file (ae.safetensors) for --codec flux-vae");
  c->add_option("--pixels-stride", o->c.pixels_stride, "pixel_unshuffle stride of the pixels codec")->capture_default_str()
      ->check(int_in(1, 64));
  c->add_option("--text-encoder", o->c.text_encoder, "frozen T5 file/dir for the text cache (none: text cache skipped)");
  c->add_option("--max-tokens", o->c.max_tokens, "prompt tokens for the text cache")->capture_default_str()
      ->check(int_in(1, 4096));
  c->add_option("--shard-mb", o->shard_mb, "size of each cache file")->capture_default_str()
      ->check(int_in(1, 1 << 20));
  c->add_option("--shard", o->shard, "i/n or mpi: this process encodes 1/n of the images");
  threads_option(c, &o->threads);
  c->add_flag("--quiet,-q", o->quiet, "no progress bar");
  c->callback([o] {
    apply_threads(o->threads);
    o->c.shard = ShardSpec::parse(o->shard);
    o->c.shard_bytes = (int64_t)o->shard_mb << 20;
    o->c.progress = !o->quiet;
    auto m = Manifest::open(o->manifest, false);
    const CacheReport r = build_cache(cli::backend(), *m, o->c);
    std::printf("cache %s (%s, stage %d): %lld latents written, %lld already cached, %lld without a bucket, %lld failed%s; "
                "%lld texts written, %lld already cached; %lld new shard files\n",
                o->c.out_dir.c_str(), r.codec_id.c_str(), o->c.stage,
                (long long)r.latents_written, (long long)r.latents_present, (long long)r.no_bucket, (long long)r.failed,
                r.other_shard ? (", " + std::to_string(r.other_shard) + " left to other shards").c_str() : "",
                (long long)r.texts_written, (long long)r.texts_present, (long long)r.shards);
    if (r.no_bucket)
      std::printf("note: %lld active images have no stage-%d bucket (too small for it, or `oboro data bucket --manifest %s "
                  "--stage %d` has not been run) and were skipped\n",
                  (long long)r.no_bucket, o->c.stage, sql::display_name(o->manifest).c_str(), o->c.stage);
    if (!r.text_note.empty()) std::printf("note: %s\n", r.text_note.c_str());
    if (r.shards_taken_over)
      std::printf("  took over %d shard(s) whose worker had stopped before finishing\n", r.shards_taken_over);
  });
}

void register_export(CLI::App& data) {
  struct Opts {
    std::string manifest;
    ExportOptions e;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("export", "Write the active images as a training folder (image + .txt caption + "
                                          "manifest.jsonl) and record the export's image set and digest");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--out,-o", o->e.out_dir, "training folder to write")->required();
  c->add_option("--mode", o->e.mode, "link (hard link, copy across file systems), copy or symlink")
      ->check(CLI::IsMember({"link", "copy", "symlink"}))
      ->capture_default_str();
  c->add_flag("--force", o->e.force, "replace a previous export in the folder");
  c->add_flag("--quiet,-q", o->quiet, "no progress bar");
  c->callback([o] {
    o->e.progress = !o->quiet;
    auto m = Manifest::open(o->manifest, false);
    const ExportReport r = export_dataset(*m, o->e);
    std::printf("export %lld: %lld images to %s (dataset digest %s)%s\n", (long long)r.export_id, (long long)r.images,
                o->e.out_dir.c_str(), r.digest.c_str(),
                r.skipped_same_content ? (", " + std::to_string(r.skipped_same_content) + " rows with the same content "
                                          "as an exported one skipped (run oboro data dedup)").c_str()
                                       : "");
    std::printf("train from it (train_data_dir = \"%s\"), then: oboro data register-model MODEL --manifest %s\n",
                o->e.out_dir.c_str(), sql::display_name(o->manifest).c_str());
  });
}

void register_register_model(CLI::App& data) {
  struct Opts {
    std::string model, manifest, data_dir;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("register-model", "Record a trained model and link it to the exact images it was "
                                                  "trained on (by its oboro.dataset digest)");
  c->add_option("model", o->model, "model .safetensors written by oboro train")->required();
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--data", o->data_dir, "the training folder (with manifest.jsonl), when it was not made by oboro data export");
  c->callback([o] {
    auto m = Manifest::open(o->manifest, false);
    const RegisterReport r = register_model(*m, o->model, o->data_dir);
    if (r.already)
      std::printf("%s is already registered (model %lld, %lld images, linked by %s)\n", o->model.c_str(),
                  (long long)r.model_id, (long long)r.images, r.linked_by.c_str());
    else
      std::printf("registered %s as model %lld: dataset digest %s, %lld images linked by %s\n", o->model.c_str(),
                  (long long)r.model_id, r.digest.c_str(), (long long)r.images, r.linked_by.c_str());
  });
}

void register_audit(CLI::App& data) {
  struct Opts {
    std::string model, manifest;
    bool all = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("audit", "Print a model's dataset digest, licences, counts and attribution");
  c->add_option("model", o->model, "model .safetensors")->required();
  c->add_option("--manifest", o->manifest, "also show which of its images are now removed, and why");
  c->add_flag("--all", o->all, "print every attribution line (default: the first 50)");
  c->callback([o] {
    // A merged model or LoRA lists every dataset of its inputs (oboro.datasets); a trained model has one.
    const std::vector<SourcedDataset> all = read_model_datasets(o->model);
    if (all.size() > 1 || !all[0].from.empty())
      std::printf("model:   %s\n%zu dataset(s) behind it (oboro merge recorded its inputs' provenance)\n",
                  o->model.c_str(), all.size());
    for (const SourcedDataset& sd : all) {
      const ModelDataset& d = sd.dataset;
      if (!sd.from.empty()) std::printf("\nfrom:    %s\n", sd.from.c_str());
      std::printf("model:   %s\ndataset: %s\nimages:  %lld\n", o->model.c_str(), d.digest.c_str(), (long long)d.images);
      std::printf("licences:\n");
      for (const auto& [k, n] : d.licenses) std::printf("  %-24s %lld\n", k.c_str(), (long long)n);
      std::printf("sources:\n");
      for (const auto& [k, n] : d.sources) std::printf("  %-24s %lld\n", k.empty() ? "(none)" : k.c_str(), (long long)n);
      std::printf("attribution (%zu):\n", d.attribution.size());
      for (size_t i = 0; i < d.attribution.size() && (o->all || i < 50); ++i) std::printf("  %s\n", d.attribution[i].c_str());
      if (!o->all && d.attribution.size() > 50) std::printf("  ... %zu more (--all)\n", d.attribution.size() - 50);
      if (o->manifest.empty()) continue;
      auto m = Manifest::open(o->manifest, false);
      sql::Stmt s(m->db(), "SELECT id, linked_by, images FROM models WHERE digest=? ORDER BY id");
      s.bind(1, d.digest);
      bool any = false;
      while (s.step()) {
        any = true;
        std::printf("registered in %s as model %lld (%lld images, linked by %s)\n",
                    sql::display_name(o->manifest).c_str(), (long long)s.i64(0),
                    (long long)s.i64(2), s.text(1).c_str());
        sql::Stmt r(m->db(), "SELECT i.sha256, i.path, i.reason FROM model_images mi JOIN images i ON i.id=mi.image_id "
                             "WHERE mi.model_id=? AND i.status='removed' ORDER BY i.id");
        r.bind(1, s.i64(0));
        int64_t n = 0;
        while (r.step()) {
          if (n++ == 0) std::printf("images removed since (a retrain without them is needed):\n");
          std::printf("  %s %s: %s\n", r.text(0).substr(0, 16).c_str(), r.text(1).c_str(), r.text(2).c_str());
        }
        if (n == 0) std::printf("none of its images has been removed since\n");
      }
      if (!any)
        std::printf("not registered in %s: oboro data register-model %s --manifest %s\n",
                    sql::display_name(o->manifest).c_str(), o->model.c_str(), sql::display_name(o->manifest).c_str());
    }
  });
}

void register_remove(CLI::App& data) {
  struct Opts {
    std::string manifest, hash, reason;
  };
  auto o = std::make_shared<Opts>();
  auto* c = data.add_subcommand("remove", "Mark an image removed (e.g. a rights problem) and list the models trained with it");
  c->add_option("--manifest", o->manifest, "the manifest file")->required();
  c->add_option("--hash", o->hash, "the image's sha256 (or a unique prefix of >= 8 hex digits)")->required();
  c->add_option("--reason", o->reason, "why (recorded)")->required();
  c->callback([o] {
    auto m = Manifest::open(o->manifest, false);
    const RemoveReport r = remove_image(*m, o->hash, o->reason);
    for (const auto& row : r.removed) std::printf("removed %s (%s): %s\n", row.path.c_str(), row.sha256.c_str(), o->reason.c_str());
    for (const auto& a : r.already) {  // exit 0: the image is removed, as asked; the first reason stays the record
      char day[32] = "an unknown date";
      const std::time_t t = (std::time_t)a.removed_at;
      if (a.removed_at > 0) std::strftime(day, sizeof day, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
      std::printf("already removed %s (%s) on %s because: %s — the first reason is kept (new reason not recorded)\n",
                  a.row.path.c_str(), a.row.sha256.c_str(), day, a.row.reason.c_str());
    }
    if (r.models.empty()) {
      std::printf("no registered model was trained with it\n");
    } else {
      std::printf("models trained with it (retrain without it):\n");
      for (const auto& mr : r.models)
        std::printf("  %s (model %lld, file sha256 %s, dataset %s, linked by %s)\n", mr.path.c_str(), (long long)mr.id,
                    mr.file_sha256.substr(0, 10).c_str(), mr.digest.c_str(), mr.linked_by.c_str());
    }
    for (const auto& [id, dir] : r.exports)
      std::printf("export %lld (%s) contains it: re-export before the next training run\n", (long long)id, dir.c_str());
  });
}

void register_synth(CLI::App& data) {
  auto o = std::make_shared<synth::Options>();
  auto* c = data.add_subcommand("synth", "Write generated photo-like test images with planted near-duplicates "
                                         "(duplicates.tsv is the ground truth), CC0");
  c->add_option("--out,-o", o->out_dir, "output folder")->required();
  c->add_option("--count,-n", o->count, "images in all")->capture_default_str()
      ->check(int_in(1, 100000000));
  c->add_option("--size", o->size, "image side in pixels")->capture_default_str()
      ->check(int_in(8, 16384));
  c->add_option("--dup-fraction", o->dup_fraction, "share of planted near-duplicates")->capture_default_str()
      ->check(real_in(0, 1));
  c->add_option("--seed", o->seed, "seed")->capture_default_str()->check(int_in(0, 4294967295));
  c->add_option("--license", o->license, "licence written to manifest.jsonl")->capture_default_str();
  c->add_flag("--force", o->force, "replace a synthetic dataset already in the folder");
  c->callback([o] {
    const synth::Summary s = synth::write_dataset(*o);
    std::printf("wrote %lld images (%lld originals, %lld planted near-duplicates; ground truth duplicates.tsv) to %s\n",
                (long long)(s.originals + s.duplicates), (long long)s.originals, (long long)s.duplicates, o->out_dir.c_str());
  });
}

}  // namespace

void register_data_manifest(CLI::App& data) {
  register_ingest(data);
  register_dedup(data);
  register_list(data);
  register_stats(data);
  register_score(data);
  register_bucket(data);
  register_cache(data);
  register_export(data);
  register_register_model(data);
  register_audit(data);
  register_remove(data);
  register_synth(data);
  register_data_manifest_copy(data);
}

}  // namespace oboro::cli
