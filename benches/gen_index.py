#!/usr/bin/env python3
"""Write a synthetic, realistic Spack layout-v3 buildcache with a large DB v8 index.

    python3 benches/gen_index.py OUT_DIR [--specs 50000] [--seed 1] [--fixtures ../shared/fixtures]

The index is shaped like the ones Spack 1.x writes (`spack buildcache update-index`): compact JSON,
`{"database":{"version":"8","installs":{HASH:{"spec":{...},"ref_count":N,"in_buildcache":B}}}}`,
each node with name/version/arch/namespace/parameters (variants + the six flag lists)/
package_hash/dependencies (name, hash, deptypes, virtuals)/annotations/hash, 32-char base32 DAG
hashes. The specs come in "stacks" (one OS x target x compiler each, as in E4S-like public caches):
per stack, external nodes (the compiler, glibc, ...), build-only tools (gmake, cmake, ... some
without a binary), and libraries/applications in dependency order, each with ~5-15 dependencies.

If the fixtures directory is found, the real signed fixture entries (`greet`, `libgreet`,
`compiler-wrapper`: manifests, blobs, key manifests) are copied in and their index records added,
so that `sf-cache show greet` verifies a real signature against the fixture key.

Also writes `v3/layout.json`, the index blob `blobs/sha256/xx/<sha256>` and
`v3/manifests/index/index.manifest.json` (contentLength, checksum). Prints one JSON line
describing the result (path of the index blob, size, record count).
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import sys

B32 = "abcdefghijklmnopqrstuvwxyz234567"
FLAGS = ["cflags", "cppflags", "cxxflags", "fflags", "ldflags", "ldlibs"]

OSES = ["ubuntu22.04", "ubuntu24.04", "rocky8", "rocky9", "debian12", "amzn2023", "sles15"]
TARGETS_X86 = ["x86_64_v3", "x86_64_v4", "zen2", "zen3", "zen4", "skylake_avx512", "icelake", "sapphirerapids"]
TARGETS_ARM = ["aarch64", "neoverse_n1", "neoverse_v1", "neoverse_v2"]
COMPILERS = [("gcc", "11.4.0"), ("gcc", "12.3.0"), ("gcc", "13.4.0"), ("gcc", "14.2.0"), ("llvm", "18.1.8")]

# Externals found on the system (no binary in the cache).
EXTERNALS = [
    ("glibc", ["2.35", "2.39", "2.28", "2.34", "2.36"], "autotools", {}),
    ("openssl", ["3.0.13", "1.1.1k", "3.2.2"], "generic", {"certs": "mozilla", "docs": False, "shared": True}),
    ("curl", ["8.5.0", "7.81.0", "7.61.1"], "autotools", {"gssapi": False, "ldap": False, "libidn2": False, "librtmp": False, "libssh": False, "libssh2": False, "nghttp2": True, "tls": ["openssl"]}),
    ("munge", ["0.5.15", "0.5.13"], "autotools", {"localstatedir": "/var"}),
]

# Build-only tools: (name, versions, build system, variants, has a binary).
BUILD_TOOLS = [
    ("compiler-wrapper", ["1.0"], "generic", {}, True),
    ("gmake", ["4.4.1", "4.3"], "generic", {"guile": False}, True),
    ("cmake", ["3.30.5", "3.27.9", "3.31.2"], "generic", {"build_type": "Release", "doc": False, "ncurses": True, "ownlibs": True, "qtgui": False}, True),
    ("pkgconf", ["2.2.0", "1.9.5"], "autotools", {}, True),
    ("m4", ["1.4.19"], "autotools", {"sigsegv": True}, False),
    ("autoconf", ["2.72", "2.69"], "autotools", {}, False),
    ("automake", ["1.16.5"], "autotools", {}, False),
    ("libtool", ["2.4.7"], "autotools", {}, False),
    ("perl", ["5.40.0", "5.38.0"], "perl", {"cpanm": True, "opcode": True, "open": True, "shared": True, "threads": True}, False),
    ("python", ["3.12.5", "3.11.9"], "generic", {"bz2": True, "ctypes": True, "dbm": True, "debug": False, "libxml2": True, "lzma": True, "optimizations": False, "pic": True, "pyexpat": True, "pythoncmd": True, "readline": True, "shared": True, "sqlite3": True, "ssl": True, "tkinter": False, "uuid": True, "zlib": True}, False),
    ("ninja", ["1.12.1"], "generic", {"re2c": False}, False),
    ("meson", ["1.5.1"], "python_pip", {}, False),
    ("bison", ["3.8.2"], "autotools", {"color": False}, False),
    ("flex", ["2.6.4"], "autotools", {"lex": True, "nls": False}, False),
]

# Libraries and applications in dependency order: (name, versions, build system, variants).
# Variant values: a list of alternatives picks one per spec; a tuple is a multi-valued variant.
PACKAGES = [
    ("zlib-ng", ["2.2.1", "2.1.6"], "autotools", {"compat": True, "new_strategies": True, "opt": True, "pic": True, "shared": True}),
    ("zstd", ["1.5.6", "1.5.5"], "makefile", {"compression": ("none",), "libs": ("shared", "static"), "programs": False}),
    ("xz", ["5.4.6", "5.6.2"], "autotools", {"libs": ("shared", "static"), "pic": False}),
    ("bzip2", ["1.0.8"], "generic", {"debug": False, "pic": False, "shared": True}),
    ("libiconv", ["1.17"], "autotools", {"libs": ("shared", "static")}),
    ("ncurses", ["6.5", "6.4"], "autotools", {"abi": "none", "symlinks": False, "termlib": True}),
    ("readline", ["8.2"], "autotools", {}),
    ("libxml2", ["2.13.4", "2.10.3"], "autotools", {"pic": True, "python": False, "shared": True}),
    ("libffi", ["3.4.6"], "autotools", {}),
    ("sqlite", ["3.46.0"], "autotools", {"column_metadata": True, "dynamic_extensions": True, "fts": True, "functions": False, "rtree": True}),
    ("hwloc", ["2.11.1", "2.9.3"], "autotools", {"cairo": False, "cuda": [False, True], "gl": False, "libudev": False, "libxml2": True, "netloc": False, "nvml": False, "opencl": False, "pci": True, "rocm": False, "shared": True}),
    ("libevent", ["2.1.12"], "autotools", {"openssl": True}),
    ("numactl", ["2.0.18"], "autotools", {}),
    ("libpciaccess", ["0.17"], "autotools", {}),
    ("rdma-core", ["52.0", "41.0"], "cmake", {"build_type": "RelWithDebInfo", "ipo": False, "pyverbs": False, "static": True}),
    ("ucx", ["1.17.0", "1.16.0"], "autotools", {"assertions": False, "cma": True, "cuda": [False, True], "dc": False, "dm": False, "gdrcopy": False, "ib_hw_tm": False, "knem": False, "logging": False, "mlx5_dv": True, "opt": True, "parameter_checking": False, "pic": True, "rc": True, "rdmacm": True, "thread_multiple": True, "ud": True, "verbs": True, "xpmem": False}),
    ("pmix", ["5.0.3", "4.2.9"], "autotools", {"docs": False, "pmi_backwards_compatibility": True, "python": False, "restful": False}),
    ("libfabric", ["1.22.0", "1.21.0"], "autotools", {"debug": False, "fabrics": ("sockets", "tcp", "udp", "verbs", "rxm"), "kdreg": False, "uring": False}),
    ("openmpi", ["5.0.5", "4.1.6"], "autotools", {"atomics": False, "cuda": [False, True], "fabrics": [("none",), ("ucx",), ("ofi",)], "gpfs": False, "internal-hwloc": False, "java": False, "lustre": False, "memchecker": False, "openshmem": False, "romio": True, "schedulers": [("none",), ("slurm",)], "static": False, "vt": True, "wrapper-rpath": True}),
    ("mpich", ["4.2.3", "4.1.2"], "autotools", {"argobots": False, "cuda": False, "device": "ch4", "fortran": True, "hwloc": True, "libxml2": True, "netmod": ["ofi", "ucx"], "pci": True, "romio": True, "slurm": [False, True], "verbs": False, "wrapperrpath": True}),
    ("openblas", ["0.3.28", "0.3.26"], "makefile", {"bignuma": False, "consistent_fpcsr": False, "dynamic_dispatch": True, "fortran": True, "ilp64": [False, True], "locking": True, "pic": True, "shared": True, "symbol_suffix": "none", "threads": ["none", "openmp", "pthreads"]}),
    ("netlib-lapack", ["3.12.0"], "cmake", {"build_type": "Release", "external-blas": False, "ipo": False, "lapacke": True, "pic": True, "shared": True, "xblas": False}),
    ("fftw", ["3.3.10"], "autotools", {"mpi": [True, False], "openmp": False, "pfft_patches": False, "precision": ("double", "float"), "shared": True}),
    ("hdf5", ["1.14.5", "1.14.3", "1.12.3"], "cmake", {"api": "default", "build_type": "Release", "cxx": False, "fortran": [False, True], "hl": True, "ipo": False, "java": False, "map": False, "mpi": [True, False], "shared": True, "subfiling": False, "szip": False, "threadsafe": False, "tools": True}),
    ("netcdf-c", ["4.9.2"], "autotools", {"blosc": False, "byterange": False, "dap": False, "fsync": False, "hdf4": False, "jna": False, "logging": False, "mpi": [True, False], "nczarr_zip": False, "optimize": True, "parallel-netcdf": False, "pic": True, "shared": True, "szip": True, "zstd": True}),
    ("netcdf-fortran", ["4.6.1"], "autotools", {"doc": False, "pic": True, "shared": True}),
    ("parallel-netcdf", ["1.12.3"], "autotools", {"burstbuffer": False, "cxx": True, "fortran": True, "pic": True, "shared": True}),
    ("boost", ["1.86.0", "1.83.0"], "generic", {"atomic": True, "chrono": True, "container": True, "context": False, "cxxstd": ["14", "17"], "date_time": True, "filesystem": True, "graph": False, "iostreams": True, "mpi": False, "multithreaded": True, "program_options": True, "python": False, "regex": True, "serialization": True, "shared": True, "system": True, "thread": True, "timer": True}),
    ("metis", ["5.1.0"], "cmake", {"gdb": False, "int64": [False, True], "ipo": False, "real64": False, "shared": True}),
    ("parmetis", ["4.0.3"], "cmake", {"gdb": False, "int64": False, "ipo": False, "shared": True}),
    ("scotch", ["7.0.4"], "cmake", {"compression": True, "esmumps": False, "int64": False, "metis": True, "mpi": True, "shared": True, "threads": True}),
    ("superlu-dist", ["9.0.0", "8.2.1"], "cmake", {"cuda": False, "int64": False, "openmp": False, "parmetis": True, "rocm": False, "shared": True}),
    ("hypre", ["2.31.0", "2.30.0"], "autotools", {"complex": False, "cuda": False, "debug": False, "fortran": True, "int64": False, "internal-superlu": False, "mixedint": False, "mpi": True, "openmp": False, "shared": True, "superlu-dist": False, "unified-memory": False}),
    ("petsc", ["3.22.1", "3.21.5"], "generic", {"batch": False, "clanguage": "C", "complex": False, "cuda": [False, True], "debug": False, "double": True, "fftw": False, "fortran": False, "hdf5": True, "hypre": True, "int64": False, "metis": True, "mpi": True, "mumps": False, "openmp": False, "ptscotch": False, "shared": True, "superlu-dist": True}),
    ("trilinos", ["16.0.0", "15.1.1"], "cmake", {"amesos": True, "amesos2": True, "anasazi": True, "aztec": True, "belos": True, "build_type": "RelWithDebInfo", "cxxstd": "17", "epetra": True, "explicit_template_instantiation": True, "ifpack": True, "ifpack2": True, "kokkos": True, "ml": True, "mpi": True, "muelu": True, "openmp": False, "shared": True, "tpetra": True, "zoltan": True}),
    ("lua", ["5.4.6"], "makefile", {"fetcher": "curl", "pcfile": False, "shared": True}),
    ("lmod", ["8.7.37"], "autotools", {"auto_swap": True, "redirect": False}),
    ("json-c", ["0.16"], "cmake", {"build_type": "Release", "ipo": False}),
    ("http-parser", ["2.9.4"], "makefile", {}),
    ("libyaml", ["0.2.5"], "autotools", {}),
    ("libjwt", ["1.15.3"], "autotools", {}),
    ("dbus", ["1.15.10"], "meson", {"system-socket": "default", "xml_docs": False}),
    ("linux-pam", ["1.6.1"], "autotools", {}),
    ("slurm", ["25-11-0-1", "24-11-1-1", "23-11-10-1"], "autotools", {"cgroup": True, "gtk": False, "hdf5": False, "hwloc": True, "mariadb": False, "nvml": [False, True], "pam": True, "pmix": True, "readline": True, "restd": True, "rsmi": False, "sysconfdir": "/etc/slurm"}),
    ("osu-micro-benchmarks", ["7.4", "7.3"], "autotools", {"cuda": False, "graphing": False, "papi": False, "rocm": False}),
    ("kokkos", ["4.4.01", "4.3.01"], "cmake", {"aggressive_vectorization": False, "build_type": "Release", "cuda": [False, True], "cxxstd": "17", "debug": False, "hwloc": False, "openmp": [False, True], "serial": True, "shared": True, "threads": False}),
    ("gromacs", ["2024.3", "2023.5"], "cmake", {"build_type": "Release", "cuda": [False, True], "cycle_subcounters": False, "double": False, "hwloc": True, "lapack": False, "mdrun_only": False, "mpi": True, "nosuffix": False, "openmp": True, "relaxed_double_prec": False, "shared": True}),
    ("lammps", ["20240829", "20230802"], "cmake", {"asphere": True, "body": False, "build_type": "Release", "cuda": False, "ffmpeg": False, "kokkos": [False, True], "kspace": True, "manybody": True, "molecule": True, "mpi": True, "openmp": True, "python": False, "rigid": True}),
    ("openfoam", ["2406", "2312"], "generic", {"int64": False, "kahip": False, "knl": False, "metis": False, "mgridgen": False, "paraview": False, "precision": "dp", "scotch": True, "source": True, "vtk": False, "zoltan": False}),
    ("wrf", ["4.6.1", "4.5.2"], "generic", {"build_type": "dm+sm", "chem": False, "compile_type": "em_real", "nesting": "basic", "pnetcdf": True}),
]

# Dependencies each package may have beyond the per-stack basics (names from PACKAGES / tools).
DEPS = {
    "zstd": [], "zlib-ng": [], "xz": [], "bzip2": [], "libiconv": [], "libffi": [], "numactl": [],
    "ncurses": ["pkgconf"], "readline": ["ncurses"], "libxml2": ["libiconv", "xz", "zlib-ng", "pkgconf"],
    "sqlite": ["readline", "zlib-ng"], "hwloc": ["libxml2", "ncurses", "libpciaccess", "pkgconf"],
    "libevent": ["openssl"], "libpciaccess": ["libtool", "pkgconf"],
    "rdma-core": ["libnl", "pkgconf", "python", "cmake"], "ucx": ["numactl", "rdma-core", "pkgconf"],
    "pmix": ["hwloc", "libevent", "zlib-ng", "perl", "python"],
    "libfabric": ["rdma-core", "numactl", "pkgconf"],
    "openmpi": ["hwloc", "libevent", "pmix", "numactl", "zlib-ng", "ucx", "libfabric", "perl", "pkgconf"],
    "mpich": ["hwloc", "libfabric", "libxml2", "pkgconf", "python", "yaksa"],
    "openblas": ["perl"], "netlib-lapack": ["cmake"], "fftw": ["mpi"],
    "hdf5": ["mpi", "zlib-ng", "pkgconf", "cmake"], "netcdf-c": ["hdf5", "mpi", "zlib-ng", "zstd", "bzip2", "curl", "libxml2", "m4"],
    "netcdf-fortran": ["netcdf-c", "hdf5", "mpi"], "parallel-netcdf": ["mpi", "perl", "m4"],
    "boost": ["bzip2", "zlib-ng", "zstd", "xz"], "metis": ["cmake"], "parmetis": ["metis", "mpi", "cmake"],
    "scotch": ["bison", "flex", "mpi", "zlib-ng", "cmake"], "superlu-dist": ["blas", "lapack", "metis", "parmetis", "mpi", "cmake"],
    "hypre": ["blas", "lapack", "mpi"], "petsc": ["blas", "lapack", "hdf5", "hypre", "metis", "parmetis", "superlu-dist", "mpi", "python", "zlib-ng"],
    "trilinos": ["blas", "lapack", "boost", "hdf5", "kokkos", "metis", "parmetis", "mpi", "cmake", "zlib-ng"],
    "lua": ["ncurses", "readline", "unzip"], "lmod": ["lua", "tcl", "bc"], "json-c": ["cmake"], "http-parser": [],
    "libyaml": [], "libjwt": ["openssl", "jansson"], "dbus": ["expat", "glib", "meson", "ninja", "pkgconf"],
    "linux-pam": ["libxcrypt", "pkgconf"],
    "slurm": ["curl", "dbus", "glib", "hwloc", "json-c", "http-parser", "libyaml", "libjwt", "linux-pam", "lz4", "munge", "openssl", "pmix", "readline", "zlib-ng", "pkgconf"],
    "osu-micro-benchmarks": ["mpi"], "kokkos": ["cmake"],
    "gromacs": ["blas", "lapack", "fftw", "hwloc", "mpi", "cmake"],
    "lammps": ["mpi", "fftw", "kokkos", "zlib-ng", "cmake"],
    "openfoam": ["boost", "fftw", "scotch", "mpi", "zlib-ng", "flex", "cmake"],
    "wrf": ["netcdf-c", "netcdf-fortran", "parallel-netcdf", "hdf5", "mpi", "libtirpc", "m4", "perl"],
}
VIRTUALS = {"mpi": ["openmpi", "mpich"], "blas": ["openblas"], "lapack": ["openblas", "netlib-lapack"]}
BUILD_ONLY = {t[0] for t in BUILD_TOOLS}


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.installs = {}
        self.seen = set()

    def hash32(self):
        while True:
            h = "".join(self.rng.choice(B32) for _ in range(32))
            if h not in self.seen:
                self.seen.add(h)
                return h

    def pkg_hash(self):
        return "".join(self.rng.choice(B32) for _ in range(52)) + "===="

    def params(self, build_system, variants):
        p = {"build_system": build_system}
        for k, v in variants.items():
            if isinstance(v, list):
                v = self.rng.choice(v)
            p[k] = list(v) if isinstance(v, tuple) else v
        if build_system == "cmake" and "build_type" not in p:
            p["build_type"] = "Release"
        if self.rng.random() < 0.05:
            p["patches"] = ["".join(self.rng.choice("0123456789abcdef") for _ in range(64))]
        for f in FLAGS:
            p[f] = []
        return dict(sorted(p.items()))

    def node(self, name, version, arch, namespace, params, deps, external=None):
        h = self.hash32()
        spec = {"name": name, "version": version, "arch": arch, "namespace": namespace, "parameters": params}
        if external is not None:
            spec["external"] = external
        if "patches" in params:
            spec["patches"] = params["patches"]
        spec["package_hash"] = self.pkg_hash()
        if deps:
            spec["dependencies"] = [
                {"name": n, "hash": dh, "parameters": {"deptypes": dt, "virtuals": v}}
                for n, dh, dt, v in sorted(deps)
            ]
        spec["annotations"] = {"original_specfile_version": 5}
        spec["hash"] = h
        return h, spec

    def add(self, h, spec, in_buildcache):
        self.installs[h] = {"spec": spec, "ref_count": 0, "in_buildcache": in_buildcache}
        for d in spec.get("dependencies", []):
            if d["hash"] in self.installs:
                self.installs[d["hash"]]["ref_count"] += 1

    def stack(self, os_name, target, compiler, budget):
        """One OS x target x compiler stack; returns how many records it added."""
        rng = self.rng
        arch = {"platform": "linux", "platform_os": os_name, "target": target}
        before = len(self.installs)
        nodes = {}  # name -> (hash, version)

        def ext(name, version, bs, variants, path="/usr", extra=None):
            h, s = self.node(name, version, arch, "builtin", self.params(bs, variants), [],
                             {"path": path, "module": None, "extra_attributes": extra or {}})
            self.add(h, s, False)
            nodes[name] = (h, version)

        cname, cver = compiler
        ext(cname, cver, "autotools" if cname == "gcc" else "cmake",
            {"languages": ("c", "c++", "fortran")} if cname == "gcc" else {"clang": True, "flang": False, "lld": True},
            extra={"compilers": {"c": f"/usr/bin/{'gcc' if cname == 'gcc' else 'clang'}",
                                 "cxx": f"/usr/bin/{'g++' if cname == 'gcc' else 'clang++'}"}})
        for name, versions, bs, variants in EXTERNALS:
            ext(name, rng.choice(versions), bs, variants)
        comp_edge = lambda: (cname, nodes[cname][0], ["build"], ["c", "cxx"])

        def basics():
            return [
                ("compiler-wrapper", nodes["compiler-wrapper"][0], ["build"], []),
                comp_edge(),
                ("gcc-runtime", nodes["gcc-runtime"][0], ["link"], []),
                ("glibc", nodes["glibc"][0], ["link"], ["libc"]),
            ]

        # gcc-runtime: built from the compiler, has a binary.
        h, s = self.node("gcc-runtime", cver if cname == "gcc" else "13.4.0", arch, "builtin",
                         self.params("generic", {}),
                         [(cname, nodes[cname][0], ["build"], []), ("glibc", nodes["glibc"][0], ["link"], ["libc"])])
        self.add(h, s, True)
        nodes["gcc-runtime"] = (h, s["version"])
        h, s = self.node("compiler-wrapper", "1.0", arch, "builtin", self.params("generic", {}), [])
        self.add(h, s, True)
        nodes["compiler-wrapper"] = (h, "1.0")

        for name, versions, bs, variants, has_binary in BUILD_TOOLS[1:]:
            deps = basics() + [("gmake", nodes["gmake"][0], ["build"], [])] if "gmake" in nodes else basics()
            h, s = self.node(name, rng.choice(versions), arch, "builtin", self.params(bs, variants), deps)
            self.add(h, s, has_binary)
            nodes[name] = (h, s["version"])

        # Fillers for dependency names that are not modelled as packages of their own.
        for name in ["libnl", "yaksa", "unzip", "tcl", "bc", "jansson", "expat", "glib", "libxcrypt", "lz4", "libtirpc"]:
            h, s = self.node(name, rng.choice(["1.0.3", "2.1", "0.4.2", "8.6.12", "2.14", "1.10.1"]), arch, "builtin",
                             self.params("autotools", {"shared": True, "pic": rng.random() < 0.5}),
                             basics() + [("gmake", nodes["gmake"][0], ["build"], []), ("pkgconf", nodes["pkgconf"][0], ["build"], [])])
            self.add(h, s, True)
            nodes[name] = (h, s["version"])
        mpi_impl = rng.choice(VIRTUALS["mpi"])
        lapack_impl = rng.choice(VIRTUALS["lapack"])

        for name, versions, bs, variants in PACKAGES:
            copies = 1 if name not in ("hdf5", "openmpi", "slurm", "petsc", "fftw", "openblas") else rng.choice([1, 2, 3])
            for _ in range(copies):
                if len(self.installs) - before >= budget:
                    return len(self.installs) - before
                deps = basics()
                deps.append(("gmake", nodes["gmake"][0], ["build"], []))
                if bs == "cmake":
                    deps.append(("cmake", nodes["cmake"][0], ["build"], []))
                elif bs == "meson":
                    deps.append(("meson", nodes["meson"][0], ["build"], []))
                elif bs == "autotools" and rng.random() < 0.3:
                    for t in ("autoconf", "automake", "libtool", "m4"):
                        deps.append((t, nodes[t][0], ["build"], []))
                names = {d[0] for d in deps}
                for dep in DEPS.get(name, []):
                    virtual = []
                    if dep in VIRTUALS:
                        virtual = [dep]
                        dep = mpi_impl if dep == "mpi" else ("openblas" if dep == "blas" else lapack_impl)
                    if dep in names or dep not in nodes:
                        continue
                    names.add(dep)
                    dt = ["build"] if dep in BUILD_ONLY else (["build", "link"] if rng.random() < 0.7 else ["build", "link", "run"])
                    deps.append((dep, nodes[dep][0], dt, virtual))
                h, s = self.node(name, rng.choice(versions), arch, "builtin", self.params(bs, variants), deps)
                self.add(h, s, True)
                nodes[name] = (h, s["version"])
        return len(self.installs) - before


def write_blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest[:2], digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return digest, path


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--specs", type=int, default=50000, help="number of index records (default 50000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fixtures", default=os.environ.get("SF_FIXTURES"),
                    help="fixtures directory (default: $SF_FIXTURES, ../shared/fixtures, /work/shared/fixtures)")
    args = ap.parse_args()
    if args.fixtures is None:
        candidates = [os.path.join(here, "..", "..", "shared", "fixtures"), "/work/shared/fixtures"]
        args.fixtures = next((c for c in candidates if os.path.isdir(c)), candidates[0])

    out = args.out
    if os.path.exists(os.path.join(out, "v3")):
        shutil.rmtree(os.path.join(out, "v3"))
        shutil.rmtree(os.path.join(out, "blobs"), ignore_errors=True)
    os.makedirs(os.path.join(out, "v3", "manifests", "index"), exist_ok=True)

    g = Gen(args.seed)
    fixture_records = {}
    fixture = os.path.join(args.fixtures, "spack-v3")
    if os.path.isdir(fixture):
        # The real signed entries: copy manifests (spec + key) and all blobs but the index.
        with open(os.path.join(fixture, "v3", "manifests", "index", "index.manifest.json")) as f:
            idx_sum = json.load(f)["data"][0]["checksum"]
        with open(os.path.join(fixture, "blobs", "sha256", idx_sum[:2], idx_sum)) as f:
            fixture_records = json.load(f)["database"]["installs"]
        shutil.copytree(os.path.join(fixture, "v3", "manifests", "spec"), os.path.join(out, "v3", "manifests", "spec"))
        shutil.copytree(os.path.join(fixture, "v3", "manifests", "key"), os.path.join(out, "v3", "manifests", "key"))
        for root, _, files in os.walk(os.path.join(fixture, "blobs")):
            for name in files:
                if name != idx_sum:
                    dst = os.path.join(out, os.path.relpath(os.path.join(root, name), fixture))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copyfile(os.path.join(root, name), dst)
        g.seen.update(fixture_records)
    else:
        print(f"gen_index: no fixtures at {fixture}: `show greet` will not work", file=sys.stderr)

    want = args.specs - len(fixture_records)
    combos = [(o, t, c) for o in OSES for t in TARGETS_X86 + TARGETS_ARM for c in COMPILERS]
    g.rng.shuffle(combos)
    i = 0
    while len(g.installs) < want:
        o, t, c = combos[i % len(combos)]
        g.stack(o, t, c, want - len(g.installs))
        i += 1
    # Stacks add their base nodes in one go: drop unreferenced leaves from the end to hit N exactly.
    for h in reversed(list(g.installs)):
        if len(g.installs) <= want:
            break
        if g.installs[h]["ref_count"] == 0:
            for d in g.installs.pop(h)["spec"].get("dependencies", []):
                g.installs[d["hash"]]["ref_count"] -= 1
    installs = dict(fixture_records)
    installs.update(g.installs)

    # Compact JSON as Spack writes it.
    text = json.dumps({"database": {"version": "8", "installs": installs}}, separators=(",", ":")).encode()
    digest, path = write_blob(out, text)
    with open(os.path.join(out, "v3", "layout.json"), "w") as f:
        f.write('{"signing": "gpg"}')
    manifest = {"version": 3, "data": [{"contentLength": len(text), "mediaType": "application/vnd.spack.db.v8+json",
                                        "compression": "none", "checksumAlgorithm": "sha256", "checksum": digest}]}
    with open(os.path.join(out, "v3", "manifests", "index", "index.manifest.json"), "w") as f:
        json.dump(manifest, f, indent=0)
    recs = installs.values()
    ndeps = [len(r["spec"].get("dependencies", [])) for r in recs]
    print(json.dumps({
        "index": path, "bytes": len(text), "specs": len(installs), "stacks": i,
        "in_buildcache": sum(r["in_buildcache"] for r in recs),
        "external": sum("external" in r["spec"] for r in recs),
        "mean_deps": round(sum(ndeps) / len(ndeps), 1),
        "mean_deps_in_buildcache": round(sum(n for n, r in zip(ndeps, recs) if r["in_buildcache"]) / max(1, sum(r["in_buildcache"] for r in recs)), 1),
        "fixture_records": len(fixture_records),
    }))


if __name__ == "__main__":
    main()
