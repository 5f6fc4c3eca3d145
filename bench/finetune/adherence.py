#!/usr/bin/env python3
"""Style adherence from oboro's dedup embedding (docs/finetune.md, "Show it works").

Reads a manifest that `oboro data ingest` filled (every image gets the dedup embedding, extractor
dct-colour-v3: 224 floats, L2-normalised, stored as float16) and groups the images by their folder
below ROOT: reference styles ref/<style>/ and generated sets gen/<set>/.

For each generated image g and each reference style S (50 held-out images each):
    sim(g, S) = mean of the K = 5 highest cos(g, s), s in S   (a 5-nearest-neighbour similarity)
The image is assigned the style with the highest sim. Printed per generated set: the share of images
assigned to the new style, the mean sim to the new style, the mean sim to the best old style (the
old style that is nearest for that image), and their difference (new - old; > 0 = closer to the new
style). Pure standard library: usage  adherence.py MANIFEST.db ROOT NEW_STYLE
"""
import sqlite3
import struct
import sys
from collections import defaultdict

K = 5  # neighbours per reference style


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: adherence.py MANIFEST.db ROOT NEW_STYLE   (see bench/finetune_demo.sh)")
    db, root, new = sys.argv[1], sys.argv[2].rstrip("/") + "/", sys.argv[3]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute("SELECT i.path, f.vec, f.extractor FROM images i JOIN features f ON f.image_id = i.id").fetchall()
    groups = defaultdict(list)  # "ref/thumbs" -> [vec]
    extractors = set()
    for path, blob, ex in rows:
        if not path.startswith(root):
            continue
        parts = path[len(root):].split("/")
        if len(parts) < 3:
            continue
        n = len(blob) // 2
        groups[parts[0] + "/" + parts[1]].append(struct.unpack(f"<{n}e", blob))
        extractors.add(ex)
    refs = {k.split("/", 1)[1]: v for k, v in groups.items() if k.startswith("ref/")}
    if new not in refs:
        sys.exit(f"adherence.py: no reference images of the new style '{new}' under {root}ref/{new}")
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    knn = lambda g, rv: sum(sorted((dot(g, r) for r in rv), reverse=True)[:K]) / K
    print(f"embedding: {', '.join(sorted(extractors))}; reference styles (images): "
          + ", ".join(f"{s} ({len(v)})" for s, v in sorted(refs.items())))
    print(f"{'set':<22} {'images':>6} {'-> ' + new:>12} {'sim new':>8} {'sim old':>8} {'new-old':>8}  nearest styles")
    for name in sorted(k for k in groups if not k.startswith("ref/")):
        vecs = groups[name]
        hits, s_new, s_old = 0, 0.0, 0.0
        counts = defaultdict(int)
        for g in vecs:
            sims = {s: knn(g, rv) for s, rv in refs.items()}
            best = max(sims, key=sims.get)
            counts[best] += 1
            hits += best == new
            s_new += sims[new]
            s_old += max(v for s, v in sims.items() if s != new)
        k = len(vecs)
        near = ", ".join(f"{s} {c}" for s, c in sorted(counts.items(), key=lambda t: -t[1]))
        print(f"{name[4:]:<22} {k:>6} {hits / k:>12.0%} {s_new / k:>8.3f} {s_old / k:>8.3f} {(s_new - s_old) / k:>+8.3f}  {near}")


if __name__ == "__main__":
    main()
