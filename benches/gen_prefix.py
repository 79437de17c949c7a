#!/usr/bin/env python3
"""Write synthetic installed Spack prefixes (a fake Spack store) for the install/publish/mirror benchmarks.

    gen_prefix.py STORE_PARENT --fixtures DIR --kind light|heavy|mixed|tiny [--mb 1024] [--count N] [--seed 1]

STORE_PARENT/build/opt/__spack_path_placeholder__/... (padded to exactly 128 characters, like the
fixture's build root) becomes a Spack store: `.spack-db/index.json` lists the prefixes, each prefix
`linux-x86_64/NAME-VERSION-HASH` holds `.spack/spec.json` (a one-package DAG adapted from the real
fixture `greet`: same arch/namespace/parameters, dependencies reduced to its externals gcc,
gcc-runtime, glibc and gmake; a new 32-character hash), so `sf-cache publish PREFIX` reads it as a
Spack install.

Kinds:
  light  `heavy-relocation`-free: thousands of small text files (no prefix inside) and a few large
         data files (no ELF magic, no prefix): unpacking is the whole job.
  heavy  thousands of text files naming the prefix, copies of the fixture's ELF `bin/greet` whose
         RPATH and strings are rewritten to name this prefix (same length), and large ELF files
         (the same ELF padded with data, the prefix string repeated in the padding).
  mixed  shaped like a real Spack-made package of ~1 GB (issue 15): ~17 700 small headers, 4 026
         text files naming the prefix, 1 150 small ELF files and 29 large ones (4 of ~100 MB):
         about 23 000 files, the prefix rewritten in ELF strings as for heavy.
  tiny   --count small packages (a script naming the prefix, a text file, a small data file):
         for the mirror benchmark.

Large contents are half random bytes, half repetitive text, so gzip compresses them about 2x
(like real binaries) instead of storing them. Output is deterministic for a given --seed.
Prints one JSON line: {"root", "prefixes": [{"name", "hash", "prefix", "bytes", "files"}], "bytes", "files"}.
"""
import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

ROOT_LEN = 128
FIX_ROOT = ("/tmp/sf-fixtures/build-1.0.2/opt/__spack_path_placeholder__/__spack_path_placeholder__/"
            "__spack_path_placeholder__/__spack_path_p")
GREET = "greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr"
GREET_SPEC_BLOB = "258a3812221e352513d48ef0f8143901fbc2c259b23ed0c714ec202a692a801b"
GREET_TARBALL = "dd69b8245e53ad6ab2d05c381cf59d1b44227d69c8b0687302482a4221e9eb6f"
KEEP_DEPS = {"gcc", "gcc-runtime", "glibc", "gmake"}


def padded_root(parent):
    base = os.path.join(os.path.abspath(parent), "build", "opt")
    pad = ""
    while len(base) + len(pad) < ROOT_LEN:
        pad += "/__spack_path_placeholder__"
    root = (base + pad)[:ROOT_LEN]
    if root.endswith("/"):
        root = root[:-1] + "_"
    if len(base) + 28 > ROOT_LEN:
        sys.exit(f"gen_prefix: {parent} is too long for a {ROOT_LEN}-character padded root")
    return root


def dag_hash(name, seed):
    raw = hashlib.sha256(f"{name}/{seed}".encode()).digest()[:20]
    return base64.b32encode(raw).decode().lower()


def blob(fixtures, digest):
    return os.path.join(fixtures, "spack-v3", "blobs", "sha256", digest[:2], digest)


def load_fixture(fixtures):
    with gzip.open(blob(fixtures, GREET_SPEC_BLOB)) as f:
        spec = json.load(f)
    with tarfile.open(blob(fixtures, GREET_TARBALL)) as t:
        elf = next(t.extractfile(m).read() for m in t.getmembers() if m.name.endswith("/bin/greet"))
    return spec, elf


def make_spec(greet_spec, name, version, h):
    nodes = greet_spec["spec"]["nodes"]
    root = json.loads(json.dumps(nodes[0]))
    root["name"], root["version"], root["hash"] = name, version, h
    root["namespace"] = "builtin"
    root["dependencies"] = [d for d in root["dependencies"] if d["name"] in KEEP_DEPS]
    keep = {d["hash"] for d in root["dependencies"]}
    others = [n for n in nodes[1:] if n["hash"] in keep]
    return {"spec": {"_meta": greet_spec["spec"]["_meta"], "nodes": [root] + others}}


class Filler:
    """Deterministic, fast pseudo-content: half random bytes, half repetitive text."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.pool = self.rng.randbytes(16 << 20)
        words = b"static const int config value buffer index offset return struct size_t while "
        self.text = (words * 2048)[: 8 << 20]

    def data(self, n, needle=b"", every=0):
        out = bytearray()
        rng, pool, text = self.rng, self.pool, self.text
        while len(out) < n:
            o = rng.randrange(0, len(pool) - 32768)
            out += pool[o:o + 32768]
            o = rng.randrange(0, len(text) - 32768)
            out += text[o:o + 32768]
            if needle and every and len(out) // every != (len(out) - 65536) // every:
                out += b"\0" + needle + b"\0"
        return bytes(out[:n])

    def text_file(self, n, prefix=None):
        lines, size, i = [], 0, 0
        while size < n:
            if prefix is not None and i % 8 == 0:
                line = f"path_{i} = {prefix}/lib/component_{i}.so  # installed file\n"
            else:
                line = f"line {i}: value {self.rng.randrange(1 << 30)} option {self.rng.random():.6f} text lorem ipsum dolor\n"
            lines.append(line)
            size += len(line)
            i += 1
        return "".join(lines).encode()


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    return len(data)


def relocated_elf(elf, root, name, version, h, kind):
    """The fixture's ELF with its build prefix rewritten in place to this package's (same length):
    returns (prefix bytes, ELF bytes)."""
    fix_prefix = f"{FIX_ROOT}/linux-x86_64/{GREET}".encode()
    mine = f"{root}/linux-x86_64/{name}-{version}-{h}".encode()
    if len(mine) != len(fix_prefix) or len(root) != len(FIX_ROOT):
        sys.exit(f"gen_prefix: {kind} needs a {len(GREET)}-character name-version-hash (got {len(mine)} vs {len(fix_prefix)})")
    my_elf = elf.replace(fix_prefix, mine).replace(FIX_ROOT.encode(), root.encode())
    assert mine in my_elf
    return mine, my_elf


def gen_package(root, name, version, h, greet_spec, elf, kind, mb, fill):
    prefix = f"{root}/linux-x86_64/{name}-{version}-{h}"
    total = files = 0

    def put(rel, data, mode=0o644):
        nonlocal total, files
        total += write(os.path.join(prefix, rel), data, mode)
        files += 1

    spec = make_spec(greet_spec, name, version, h)
    put(".spack/spec.json", json.dumps(spec, indent=1).encode())
    want = mb << 20
    if kind == "light":
        n_small = 4000
        for i in range(n_small):
            put(f"share/{name}/d{i // 200:02d}/file{i:05d}.txt", fill.text_file(fill.rng.randrange(2048, 30000)))
        big = 4
        rest = max(want - total, 1 << 20)
        for i in range(big):
            put(f"lib/libdata{i}.a", fill.data(rest // big))
    elif kind == "heavy":
        mine, my_elf = relocated_elf(elf, root, name, version, h, kind)
        for i in range(3000):
            put(f"share/{name}/t{i // 200:02d}/conf{i:05d}.txt", fill.text_file(fill.rng.randrange(4096, 24000), prefix))
        for i in range(2000):
            put(f"bin/tool{i:05d}", my_elf, 0o755)
        big = 16
        rest = max(want - total, 1 << 20)
        for i in range(big):
            put(f"lib/libheavy{i}.so", my_elf + fill.data(rest // big - len(my_elf), mine, 1 << 20), 0o755)
    elif kind == "mixed":
        # Shaped like the real Spack-made 977 MB package of issue 15 (22 944 members, 1 179 ELF
        # files, 4 026 text files to relocate, some ELF files of ~110 MB): many small files, a
        # thousand small ELF files, a few large ones, prefix-bearing text.
        mine, my_elf = relocated_elf(elf, root, name, version, h, kind)
        for i in range(4026):
            put(f"share/{name}/t{i // 200:02d}/conf{i:05d}.txt", fill.text_file(fill.rng.randrange(2048, 16000), prefix))
        for i in range(17700):
            put(f"include/{name}/h{i // 250:03d}/hdr{i:05d}.h", fill.text_file(fill.rng.randrange(512, 6000)))
        for i in range(1150):
            put(f"lib/{name}/m{i // 200:02d}/libmod{i:05d}.so", my_elf, 0o755)
        rest = max(want - total, 64 << 20)
        large, medium = 4, 25
        for i in range(large):
            put(f"lib/libsys{i}.so", my_elf + fill.data(rest * 45 // 100 // large - len(my_elf), mine, 1 << 20), 0o755)
        for i in range(medium):
            put(f"lib/libmid{i:02d}.so", my_elf + fill.data(rest * 55 // 100 // medium - len(my_elf), mine, 1 << 20), 0o755)
    elif kind == "tiny":
        put(f"bin/{name}", f"#!/bin/sh\nexec {prefix}/libexec/{name}.real \"$@\"\n".encode(), 0o755)
        put(f"share/{name}/README", fill.text_file(fill.rng.randrange(200, 2000)))
        put(f"lib/{name}.dat", fill.data(fill.rng.randrange(1024, 16384)))
    return {"name": name, "version": version, "hash": h, "prefix": prefix, "bytes": total, "files": files}, spec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("parent")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--kind", choices=["light", "heavy", "mixed", "tiny"], required=True)
    ap.add_argument("--mb", type=int, default=1024, help="approximate unpacked size (light, heavy, mixed)")
    ap.add_argument("--count", type=int, default=1000, help="packages (tiny)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    root = padded_root(a.parent)
    greet_spec, elf = load_fixture(a.fixtures)
    fill = Filler(a.seed)
    pkgs, installs = [], {}
    if a.kind == "tiny":
        names = [(f"tiny{i:05d}", "1.0") for i in range(a.count)]
    else:
        # "heavy-1.0.0-" and "mixed-1.0.0-" have the length of "greet-2.1.0-": the ELF strings
        # are rewritten in place.
        names = [(a.kind, "1.0.0")]
    for name, version in names:
        h = dag_hash(name, a.seed)
        p, spec = gen_package(root, name, version, h, greet_spec, elf, a.kind, a.mb, fill)
        pkgs.append(p)
        installs[h] = {"spec": spec["spec"]["nodes"][0], "ref_count": 0, "path": p["prefix"],
                       "installed": True, "explicit": True, "installation_time": 0}
    db = os.path.join(root, ".spack-db", "index.json")
    old = {}
    if os.path.exists(db):
        with open(db) as f:
            old = json.load(f)["database"]["installs"]
    old.update(installs)
    os.makedirs(os.path.dirname(db), exist_ok=True)
    with open(db, "w") as f:
        json.dump({"database": {"version": "8", "installs": old}}, f)
    print(json.dumps({"root": root, "prefixes": pkgs, "bytes": sum(p["bytes"] for p in pkgs),
                      "files": sum(p["files"] for p in pkgs)}))


if __name__ == "__main__":
    main()
