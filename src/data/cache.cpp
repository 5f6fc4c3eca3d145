#include "data/cache.h"

#include "core/dtype.h"
#include "core/error.h"
#include "core/sha256.h"
#include "core/threads.h"
#include "data/buckets.h"
#include "data/progress.h"
#include "data/work_claims.h"
#include "io/image.h"
#include "io/atomic_file.h"
#include "models/codec.h"
#include "models/text_encoder.h"
#include "ops/backend.h"

#include <cstdio>
#include <filesystem>

namespace oboro {

namespace fs = std::filesystem;

std::string codec_identity(const std::string& codec, int stride, const std::string& vae) {
  if (codec == "flux-vae") {
    if (vae.empty()) fail("--codec flux-vae needs the FLUX.1 VAE: pass --vae ae.safetensors");
    std::error_code ec;
    if (!fs::is_regular_file(vae, ec)) fail("--vae ", vae, ": no such file: pass FLUX.1's ae.safetensors");
    return "flux-vae/" + sha256_file(vae).substr(0, 16) + "/v1";
  }
  if (codec != "pixels") fail("--codec ", codec, ": use pixels or flux-vae (with --vae ae.safetensors)");
  if (stride < 1 || stride > 8 || (stride & (stride - 1)))
    fail("--pixels-stride ", stride, ": use 1, 2, 4 or 8 (bucket sides are multiples of 64)");
  return "pixels/stride=" + std::to_string(stride) + "/v1";
}

std::string latent_cache_key(const std::string& sha, int bw, int bh, int cx, int cy, int cw, int ch, const std::string& codec_id) {
  return sha256_hex(str("latent|", sha, "|", bw, "x", bh, "|", cx, ",", cy, ",", cw, ",", ch, "|", codec_id));
}

std::string text_encoder_identity(const std::string& path, int dim) {
  const bool dir = fs::is_directory(path);
  return "t5:" + (dir ? fs::absolute(path).string() : sha256_file(path).substr(0, 16)) + ":dim=" + std::to_string(dim);
}

std::string text_cache_key(const std::string& encoder_id, int max_tokens, const std::string& caption) {
  return sha256_hex(str("text|", encoder_id, "|", max_tokens, "|", caption));
}

namespace {

std::string sanitise(const std::string& s) {
  std::string o;
  for (char c : s) o += (std::isalnum((unsigned char)c) || c == '-') ? c : '_';
  return o;
}

// Accumulates tensors and writes them as numbered shards: PREFIX-NNNNNN.safetensors.
class ShardWriter {
 public:
  ShardWriter(Manifest& m, fs::path dir, std::string prefix, std::string kind, std::map<std::string, std::string> meta,
              int64_t max_bytes)
      : m_(m), dir_(std::move(dir)), prefix_(std::move(prefix)), kind_(std::move(kind)), meta_(std::move(meta)),
        max_bytes_(max_bytes) {
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string n = it->path().filename().string();
      if (n.rfind(prefix_ + "-", 0) == 0) seq_ = std::max(seq_, std::atoi(n.c_str() + prefix_.size() + 1) + 1);
    }
  }
  // `links`: image_cache rows to upsert once the shard is committed: (image id, latent key or "", text key or "").
  void add(const std::string& key, Tensor t, std::vector<int64_t> image_ids) {
    bytes_ += (int64_t)t.nbytes();
    items_.push_back({key, std::move(t), std::move(image_ids)});
    if (bytes_ >= max_bytes_) flush();
  }
  // An entry added but not yet committed (same caption seen again after its batch was encoded): link one more image
  // to it instead of adding the tensor twice. False when no such entry is waiting.
  bool link_pending(const std::string& key, int64_t image_id) {
    for (auto& it : items_)
      if (it.key == key) {
        it.ids.push_back(image_id);
        return true;
      }
    return false;
  }
  std::function<void(sql::Db&, const std::string& key, const std::vector<int64_t>& ids)> on_commit;
  void flush() {
    if (items_.empty()) return;
    char num[16];
    std::snprintf(num, sizeof num, "%06d", seq_++);
    const std::string name = prefix_ + "-" + num + ".safetensors";
    SafetensorsWriter w;
    for (const auto& it : items_) w.add(it.key, it.t);
    for (const auto& [k, v] : meta_) w.set_metadata(k, v);
    w.set_metadata("oboro.cache", kind_);
    w.write((dir_ / name).string());
    sql::Db& db = m_.db();
    sql::Transaction tx(db);
    sql::Stmt ins(db, "INSERT INTO cache_entries(key, kind, shard, tensor, created) VALUES (?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET kind=excluded.kind, shard=excluded.shard, tensor=excluded.tensor, created=excluded.created");
    const int64_t t = now_unix();
    for (const auto& it : items_) {
      ins.bind(1, it.key).bind(2, kind_).bind(3, name).bind(4, it.key).bind(5, t).run();
      if (on_commit) on_commit(db, it.key, it.ids);
    }
    tx.commit();
    ++shards_;
    items_.clear();
    bytes_ = 0;
  }
  int64_t shards() const { return shards_; }

 private:
  struct Item {
    std::string key;
    Tensor t;
    std::vector<int64_t> ids;
  };
  Manifest& m_;
  fs::path dir_;
  std::string prefix_, kind_;
  std::map<std::string, std::string> meta_;
  int64_t max_bytes_, bytes_ = 0, shards_ = 0;
  int seq_ = 0;
  std::vector<Item> items_;
};

bool has_entry(sql::Stmt& q, const std::string& key) {
  q.bind(1, key);
  const bool r = q.step();
  q.reset();
  return r;
}

// An active image of the latent pass: its bucket (width 0: none yet) and, once encoded, its latent or error.
struct LatentJob {
  int64_t id;
  std::string path, sha, key;
  Bucket b;
  int w, h;
  Tensor latent;
  std::string error;
};

// The next page (up to 512, by id) of active images after last_id, with their bucket of `stage`.
std::vector<LatentJob> read_latent_page(sql::Db& db, int stage, int64_t last_id) {
  std::vector<LatentJob> page;
  sql::Stmt s(db, "SELECT i.id, i.path, i.sha256, i.width, i.height, b.width, b.height, b.crop_x, b.crop_y, b.crop_w, "
                  "b.crop_h FROM images i LEFT JOIN buckets b ON b.image_id=i.id AND b.stage=? "
                  "WHERE i.status='active' AND i.id > ? ORDER BY i.id LIMIT 512");
  s.bind(1, stage).bind(2, last_id);
  while (s.step()) {
    LatentJob j;
    j.id = s.i64(0);
    j.path = s.text(1);
    j.sha = s.text(2);
    j.w = (int)s.i64(3);
    j.h = (int)s.i64(4);
    if (s.is_null(5)) {
      j.b.width = 0;
    } else {
      j.b = Bucket{(int)s.i64(5), (int)s.i64(6), (int)s.i64(7), (int)s.i64(8), (int)s.i64(9), (int)s.i64(10)};
    }
    page.push_back(std::move(j));
  }
  return page;
}

// Sorts a page in one transaction: counts other shards' images and those without a bucket, links the images whose
// latent is already cached (`link`), and returns the ones still to encode.
std::vector<LatentJob> latents_to_encode(sql::Db& db, std::vector<LatentJob>& page, const CacheOptions& opt,
                                         const std::string& codec_id, sql::Stmt& q_has, sql::Stmt& link,
                                         CacheReport& rep) {
  std::vector<LatentJob> todo;
  sql::Transaction tx(db);
  for (LatentJob& j : page) {
    ++rep.images;
    if (!opt.shard.mine(j.sha)) {
      ++rep.other_shard;
      continue;
    }
    if (j.b.width == 0) {  // too small for the stage, or `oboro data bucket` not run yet
      ++rep.no_bucket;
      continue;
    }
    j.key = latent_cache_key(j.sha, j.b.width, j.b.height, j.b.crop_x, j.b.crop_y, j.b.crop_w, j.b.crop_h, codec_id);
    if (has_entry(q_has, j.key)) {
      ++rep.latents_present;
      link.bind(1, j.id).bind(2, opt.stage).bind(3, codec_id).bind(4, j.key).run();
    } else {
      todo.push_back(std::move(j));
    }
  }
  tx.commit();
  return todo;
}

// Encodes one bucket-sized image, chw [3, H, W] floats, into j.latent: F16 [C, H/stride, W/stride].
void encode_latent(const LatentCodec& lc, LatentJob& j, const std::vector<float>& chw) {
  const int s = lc.stride;
  std::vector<float> lat((size_t)lc.channels() * (j.b.height / s) * (j.b.width / s));
  lc.encode(chw.data(), j.b.height, j.b.width, lat.data());
  Tensor t = Tensor::empty({lc.channels(), j.b.height / s, j.b.width / s}, DType::F16);
  uint16_t* d = t.data<uint16_t>();
  for (size_t k = 0; k < lat.size(); ++k) d[k] = f32_to_f16(lat[k]);
  j.latent = std::move(t);
}

// Loads and crops the images in parallel and encodes them: in the same loop for the pixel codec, one at a time
// afterwards for the VAE (it parallelises inside). A failure goes to the job's error.
void encode_latents(const LatentCodec& lc, std::vector<LatentJob>& todo) {
  const bool parallel_encode = !lc.vae;
  std::vector<std::vector<float>> chws(todo.size());
  parallel_for((int64_t)todo.size(), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      LatentJob& j = todo[(size_t)i];
      try {
        const Image img = load_image(j.path);
        const auto [fx, fy] = crop_fractions(img.width, img.height, j.b);
        const Image crop = resize_cover_crop(img, j.b.width, j.b.height, fx, fy);
        std::vector<float> chw((size_t)3 * crop.width * crop.height);
        image_to_chw(crop, chw.data());
        if (parallel_encode) encode_latent(lc, j, chw);
        else chws[(size_t)i] = std::move(chw);
      } catch (const std::exception& ex) {
        j.error = ex.what();
      }
    }
  });
  if (!parallel_encode)
    for (size_t i = 0; i < todo.size(); ++i)
      if (todo[i].error.empty()) {
        encode_latent(lc, todo[i], chws[i]);
        std::vector<float>().swap(chws[i]);
      }
}

// The latent pass: every active image of this shard with a bucket of opt.stage gets its latent, encoded into lw's
// shards (linked in image_cache when a shard commits) or, when already cached, linked at once.
void cache_latents(Manifest& m, const CacheOptions& opt, const LatentCodec& lc, const std::string& codec_id,
                   ShardWriter& lw, sql::Stmt& link, sql::Stmt& q_has, CacheReport& rep) {
  sql::Db& db = m.db();
  const int64_t total = m.count("status='active'");
  Progress prog("cache latents stage " + std::to_string(opt.stage) + " " + codec_id, total, opt.progress);
  int64_t last_id = 0;
  for (;;) {
    std::vector<LatentJob> page = read_latent_page(db, opt.stage, last_id);
    if (page.empty()) break;
    last_id = page.back().id;
    const int64_t page_n = (int64_t)page.size();
    std::vector<LatentJob> todo = latents_to_encode(db, page, opt, codec_id, q_has, link, rep);
    encode_latents(lc, todo);
    for (LatentJob& j : todo) {
      if (!j.error.empty()) {
        std::fprintf(stderr, "oboro: warning: %s (not cached)\n", j.error.c_str());
        ++rep.failed;
        continue;
      }
      lw.add(j.key, std::move(j.latent), {j.id});
      ++rep.latents_written;
    }
    prog.add(page_n);
  }
  lw.flush();
  prog.finish();
  rep.shards += lw.shards();
}

// (image id, sha) of the active images with a latent of this stage and codec, by id.
std::vector<std::pair<int64_t, std::string>> images_with_latents(sql::Db& db, int stage, const std::string& codec_id) {
  std::vector<std::pair<int64_t, std::string>> rows;
  sql::Stmt s(db, "SELECT ic.image_id, i.sha256 FROM image_cache ic JOIN images i ON i.id=ic.image_id "
                  "WHERE i.status='active' AND ic.stage=? AND ic.codec=? ORDER BY ic.image_id");
  s.bind(1, stage).bind(2, codec_id);
  while (s.step()) rows.push_back({s.i64(0), s.text(1)});
  return rows;
}

// Captions waiting for the text encoder; identical captions share one entry.
struct PendingTexts {
  std::map<std::string, std::vector<int64_t>> ids;  // key → images
  std::map<std::string, std::string> caption_of;

  // Encodes the waiting captions in one batch and adds their states, F32 [valid tokens, dim], to tw.
  void encode(TextEncoder& te, int max_tokens, ShardWriter& tw, CacheReport& rep) {
    if (ids.empty()) return;
    std::vector<std::string> keys, prompts;
    for (const auto& [k, v] : ids) keys.push_back(k), prompts.push_back(caption_of[k]);
    TextBatch tb = te.encode(prompts, false, max_tokens);
    for (size_t b = 0; b < keys.size(); ++b) {
      const int valid = tb.lengths[b];
      const std::vector<float> row = download_row(tb, (int)b);
      Tensor t = Tensor::empty({valid, tb.dim}, DType::F32);
      std::copy(row.begin(), row.end(), t.f32());
      tw.add(keys[b], std::move(t), ids[keys[b]]);
      ++rep.texts_written;
    }
    ids.clear();
    caption_of.clear();
  }
};

// The text pass: the training caption of every image of this shard with a latent of this stage and codec gets its
// text-encoder states (identical captions share one entry), linked in image_cache.
void cache_texts(Backend& be, Manifest& m, const CacheOptions& opt, const std::string& codec_id,
                 const std::string& shard_tag, sql::Stmt& q_has, CacheReport& rep) {
  sql::Db& db = m.db();
  std::unique_ptr<TextEncoder> te = TextEncoder::load(opt.text_encoder, be);
  const std::string enc_id = text_encoder_identity(opt.text_encoder, te->dim());
  ShardWriter tw(m, opt.out_dir, "text-" + sanitise(enc_id.substr(0, 19)) + shard_tag, "text", {{"oboro.text_encoder", enc_id}},
                 opt.shard_bytes);
  sql::Stmt tlink(db, "UPDATE image_cache SET text_key=? WHERE image_id=? AND stage=? AND codec=?");
  tw.on_commit = [&](sql::Db&, const std::string& key, const std::vector<int64_t>& ids) {
    for (int64_t id : ids) tlink.bind(1, key).bind(2, id).bind(3, opt.stage).bind(4, codec_id).run();
  };
  const std::vector<std::pair<int64_t, std::string>> rows = images_with_latents(db, opt.stage, codec_id);
  Progress tprog("cache text " + enc_id, (int64_t)rows.size(), opt.progress);
  PendingTexts pending;
  for (const auto& [id, sha] : rows) {
    if (!opt.shard.mine(sha)) {
      tprog.add();
      continue;
    }
    const std::string cap = m.training_caption(id);
    const std::string key = text_cache_key(enc_id, opt.max_tokens, cap);
    if (has_entry(q_has, key) && !pending.ids.count(key)) {
      ++rep.texts_present;
      tlink.bind(1, key).bind(2, id).bind(3, opt.stage).bind(4, codec_id).run();
    } else if (!pending.ids.count(key) && tw.link_pending(key, id)) {
      // encoded earlier in this run, its shard not yet written: linked when it is
    } else {
      pending.ids[key].push_back(id);
      pending.caption_of[key] = cap;
      if (pending.ids.size() >= 32) pending.encode(*te, opt.max_tokens, tw, rep);
    }
    tprog.add();
  }
  pending.encode(*te, opt.max_tokens, tw, rep);
  tw.flush();
  rep.shards += tw.shards();
}

// One shard (opt.shard) of the cache: latents, then text states.
CacheReport build_cache_shard(Backend& be, Manifest& m, const CacheOptions& opt) {
  CacheReport rep;
  if (opt.out_dir.empty()) fail("data cache: pass --out DIR (the cache folder)");
  if (opt.stage != 1 && opt.stage != 2) fail("--stage ", opt.stage, ": use 1 or 2");
  if (opt.max_tokens < 2) fail("--max-tokens must be at least 2");
  const std::string codec_id = codec_identity(opt.codec, opt.pixels_stride, opt.vae);
  rep.codec_id = codec_id;
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec || !fs::is_directory(opt.out_dir)) fail(opt.out_dir, ": cannot create the cache folder: ", ec.message());
  remove_stale_temps(opt.out_dir);  // shards of a run killed while writing them (io/atomic_file.h)
  sql::Db& db = m.db();
  const std::string shard_tag = opt.shard.count > 1 ? "-s" + std::to_string(opt.shard.index) + "of" + std::to_string(opt.shard.count) : "";
  const LatentCodec lc = LatentCodec::open(opt.codec, opt.pixels_stride, opt.vae, be, "--vae");

  // ---- latents ----
  ShardWriter lw(m, opt.out_dir, "latent-" + sanitise(codec_id) + shard_tag, "latent", {{"oboro.codec", codec_id}},
                 opt.shard_bytes);
  sql::Stmt link(db, "INSERT INTO image_cache(image_id, stage, codec, latent_key) VALUES (?,?,?,?) "
                     "ON CONFLICT(image_id, stage, codec) DO UPDATE SET latent_key=excluded.latent_key");
  lw.on_commit = [&](sql::Db&, const std::string& key, const std::vector<int64_t>& ids) {
    for (int64_t id : ids) link.bind(1, id).bind(2, opt.stage).bind(3, codec_id).bind(4, key).run();
  };
  sql::Stmt q_has(db, "SELECT 1 FROM cache_entries WHERE key=?");
  cache_latents(m, opt, lc, codec_id, lw, link, q_has, rep);

  // ---- text ----
  if (opt.text_encoder.empty()) {
    rep.text_note = "text cache skipped: no --text-encoder given (a from-scratch T5 trains jointly with the DiT, so its "
                    "outputs change every step and cannot be cached)";
    return rep;
  }
  cache_texts(be, m, opt, codec_id, shard_tag, q_has, rep);
  return rep;
}

}  // namespace

CacheReport build_cache(Backend& be, Manifest& m, const CacheOptions& opt) {
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(opt.out_dir, ec), ec);
  WorkClaims claims(m, str("cache ", out.string(), " stage=", opt.stage, " codec=", opt.codec, "/", opt.pixels_stride, "/",
                           opt.vae, " te=", opt.text_encoder),
                    opt.shard);
  CacheReport rep;
  bool first = true;
  while (auto shard = claims.next()) {
    CacheOptions o = opt;
    o.shard = *shard;
    CacheReport r = build_cache_shard(be, m, o);
    claims.done();
    if (first) {
      rep = std::move(r);
      first = false;
      continue;
    }
    rep.latents_written += r.latents_written, rep.latents_present += r.latents_present, rep.no_bucket += r.no_bucket;
    rep.failed += r.failed, rep.texts_written += r.texts_written, rep.texts_present += r.texts_present;
    rep.shards += r.shards;
  }
  rep.shards_taken_over = claims.taken_over();
  return rep;
}

// ---- reader ----

std::vector<CacheReader::Item> CacheReader::items(int stage, const std::string& codec_id) {
  std::vector<Item> out;
  sql::Stmt s(m_.db(), "SELECT i.id, i.path, i.sha256, ic.latent_key, ic.text_key, b.width, b.height, b.crop_x, b.crop_y, "
                       "b.crop_w, b.crop_h FROM image_cache ic JOIN images i ON i.id=ic.image_id JOIN buckets b ON "
                       "b.image_id=i.id AND b.stage=ic.stage JOIN cache_entries c ON c.key=ic.latent_key "
                       "WHERE i.status='active' AND ic.stage=? AND ic.codec=? ORDER BY i.id");
  s.bind(1, stage).bind(2, codec_id);
  while (s.step()) {
    const int bw = (int)s.i64(5), bh = (int)s.i64(6);
    // An entry made for another bucket/crop or older content is stale: its key no longer matches.
    const std::string want = latent_cache_key(s.text(2), bw, bh, (int)s.i64(7), (int)s.i64(8), (int)s.i64(9),
                                              (int)s.i64(10), codec_id);
    if (want != s.text(3)) continue;
    Item it;
    it.image_id = s.i64(0);
    it.path = s.text(1);
    it.latent_key = s.text(3);
    it.text_key = s.text(4);
    it.width = bw;
    it.height = bh;
    out.push_back(std::move(it));
  }
  for (auto& it : out) it.caption = m_.training_caption(it.image_id);
  return out;
}

std::optional<Tensor> CacheReader::get(const std::string& key) {
  sql::Stmt s(m_.db(), "SELECT shard, tensor FROM cache_entries WHERE key=?");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  const std::string shard = s.text(0), name = s.text(1);
  auto it = open_.find(shard);
  if (it == open_.end()) {
    const std::string p = (fs::path(dir_) / shard).string();
    std::error_code ec;
    if (!fs::exists(p, ec))
      fail(p, ": cache shard listed in ", m_.path(), " is missing: re-run `oboro data cache` with the same --out");
    it = open_.emplace(shard, SafetensorsFile::open(p)).first;
  }
  if (!it->second->has(name)) fail(it->second->path(), ": has no entry ", name, ": re-run `oboro data cache`");
  return it->second->tensor_f32(name);
}

std::optional<Tensor> CacheReader::latent(const std::string& key) { return get(key); }
std::optional<Tensor> CacheReader::text(const std::string& key) { return key.empty() ? std::nullopt : get(key); }

}  // namespace oboro
