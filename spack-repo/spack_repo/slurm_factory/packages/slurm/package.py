# sf-cache: the Slurm recipe of the Slurm Factory builds (namespace slurm_factory).
#
# Versions are the four release series Slurm Factory ships (25.11 default, 24.11, 23.11, 23.02),
# each pinned to one upstream tag of github.com/SchedMD/slurm. The variants are the ones the
# Slurm Factory layer of sf-cache asks for: GPU builds (+nvml for NVIDIA, +rsmi for AMD), PMIx,
# hwloc, and the "minimal" build (no PMIx, no hwloc, no REST daemon).

from spack_repo.builtin.build_systems.autotools import AutotoolsPackage

from spack.package import *


class Slurm(AutotoolsPackage):
    """Slurm workload manager (controller, node daemon, client commands and libraries), built the
    way the Slurm Factory relocatable tarballs and buildcaches are."""

    homepage = "https://slurm.schedmd.com"
    url = "https://github.com/SchedMD/slurm/archive/slurm-25-11-6-1.tar.gz"

    license("GPL-2.0-or-later")

    # Upstream tags are spelled with dashes; Spack compares versions component by component, so
    # `slurm@25.11` selects 25-11-6-1.
    version("25-11-6-1", sha256="2e305a5cc051d08ded4d710e349636b6a054da2c371bbce85797744b693ca790", preferred=True)
    version("24-11-6-1", sha256="282708483326f381eb001a14852a1a82e65e18f37b62b7a5f4936c0ed443b600")
    version("23-11-11-1", sha256="e9234e664ce30be206f73c0ff1a5f33e0ce32be35ece812eac930fcaa9da2c2f")
    version("23-02-7-1", sha256="3f60ad5b5a492312d1febb9f9167caa3aee7f8438bb032590a993f5a65c5e4db")

    variant("nvml", default=False, description="GPU autodetection on NVIDIA hardware (NVML, from CUDA)")
    variant("rsmi", default=False, description="GPU autodetection on AMD hardware (ROCm SMI)")
    variant("pmix", default=True, description="PMIx support for MPI launches with srun")
    variant("hwloc", default=True, description="hwloc topology support (task affinity, cgroups)")
    variant("restd", default=False, description="Build the slurmrestd REST daemon")
    variant("readline", default=True, description="Readline in scontrol and sacctmgr")
    variant("pam", default=False, description="PAM support (pam_slurm_adopt)")
    variant("cgroup", default=True, description="cgroup v2 plugin (needs D-Bus)")
    variant(
        "sysconfdir",
        default="/etc/slurm",
        values=any,
        description="Where the daemons look for slurm.conf (SLURM_CONF overrides it at run time)",
    )

    conflicts("+nvml", when="+rsmi", msg="choose one GPU vendor per build: +nvml or +rsmi")

    depends_on("c", type="build")
    depends_on("pkgconfig", type="build")

    depends_on("curl")
    depends_on("glib")
    depends_on("json-c")
    depends_on("lz4")
    depends_on("munge")
    depends_on("openssl")
    depends_on("zlib-api")

    depends_on("readline", when="+readline")
    depends_on("pmix@:5", when="+pmix")
    depends_on("hwloc", when="+hwloc")
    depends_on("dbus", when="+cgroup")
    depends_on("linux-pam", when="+pam")
    depends_on("cuda", when="+nvml")
    depends_on("rocm-smi-lib", when="+rsmi")
    depends_on("http-parser", when="+restd")
    depends_on("libyaml", when="+restd")
    depends_on("libjwt", when="+restd")

    def url_for_version(self, version):
        return f"https://github.com/SchedMD/slurm/archive/slurm-{version.dashed}.tar.gz"

    def configure_args(self):
        spec = self.spec
        args = [
            f"--with-libcurl={spec['curl'].prefix}",
            f"--with-json={spec['json-c'].prefix}",
            f"--with-lz4={spec['lz4'].prefix}",
            f"--with-munge={spec['munge'].prefix}",
            f"--with-ssl={spec['openssl'].prefix}",
            f"--with-zlib={spec['zlib-api'].prefix}",
            f"--sysconfdir={spec.variants['sysconfdir'].value}",
            "--disable-gtktest",
            "--without-hdf5",
        ]
        args += self.with_or_without("readline")
        if spec.satisfies("+pmix"):
            args.append(f"--with-pmix={spec['pmix'].prefix}")
        else:
            args.append("--without-pmix")
        if spec.satisfies("+hwloc"):
            args.append(f"--with-hwloc={spec['hwloc'].prefix}")
        else:
            args.append("--without-hwloc")
        if spec.satisfies("+restd"):
            args += [
                "--enable-slurmrestd",
                f"--with-http-parser={spec['http-parser'].prefix}",
                f"--with-yaml={spec['libyaml'].prefix}",
                f"--with-jwt={spec['libjwt'].prefix}",
            ]
        else:
            args.append("--disable-slurmrestd")
        if spec.satisfies("+nvml"):
            args.append(f"--with-nvml={spec['cuda'].prefix}")
        if spec.satisfies("+rsmi"):
            args.append(f"--with-rsmi={spec['rocm-smi-lib'].prefix}")
        if spec.satisfies("+pam"):
            args.append(f"--with-pam_dir={spec['linux-pam'].prefix.lib.security}")
        return args

    def install(self, spec, prefix):
        make("install")
        # libpmi2 for MPI libraries that start ranks through PMI-2.
        make("-C", "contribs/pmi2", "install")
