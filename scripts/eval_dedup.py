#!/usr/bin/env python3
"""Score `oboro data dedup` against the ground truth of `oboro data synth`.

usage: scripts/eval_dedup.py MANIFEST.db SYNTH_DIR

A planted near-duplicate is "found" when it and its original end up represented by the same
kept image; a removal is "wrong" when the kept image it points to belongs to another family
(a different original): that is a distinct image merged.
"""
import os
import sqlite3
import sys


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    db, root = sys.argv[1], os.path.abspath(sys.argv[2])
    family = {}
    with open(os.path.join(root, "duplicates.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            dup, orig, _kind = line.rstrip("\n").split("\t")
            family[dup] = orig
    con = sqlite3.connect(db)
    rows = con.execute("SELECT relpath, sha256, status, reason, reason_kind FROM images WHERE root = ?", (root,)).fetchall()
    if not rows:
        sys.exit(f"{db}: no images ingested from {root}")
    active_by_sha = {sha: rel for rel, sha, status, _, _ in rows if status == "active"}
    rep = {}
    for rel, sha, status, reason, kind in rows:
        if status == "active":
            rep[rel] = rel
        elif kind == "duplicate":
            rep[rel] = active_by_sha.get(reason[len("duplicate of "):])
    fam = lambda rel: family.get(rel, rel)
    planted = found = wrong = removed = 0
    by_kind = {}
    with open(os.path.join(root, "duplicates.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            dup, orig, kind = line.rstrip("\n").split("\t")
            planted += 1
            ok = rep.get(dup) is not None and rep.get(dup) == rep.get(orig)
            found += ok
            k = by_kind.setdefault(kind, [0, 0])
            k[0] += 1
            k[1] += ok
    for rel, r in rep.items():
        if r is not None and r != rel:
            removed += 1
            wrong += fam(r) != fam(rel)
    print(f"planted near-duplicates: {planted}, found: {found} ({100.0 * found / max(planted, 1):.2f}%)")
    for kind, (n, ok) in sorted(by_kind.items()):
        print(f"  {kind:22s} {ok}/{n} ({100.0 * ok / n:.2f}%)")
    print(f"removed as duplicates: {removed}, of which distinct images merged: {wrong} "
          f"(precision {100.0 * (removed - wrong) / max(removed, 1):.3f}%)")


if __name__ == "__main__":
    main()
