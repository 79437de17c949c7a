# sf-cache: a tiny package whose source ships inside this repository (sf-hello-1.0.tar.gz beside
# this file), so a source build can be tried without any network: `sf-cache build sf-hello`.

import os

from spack_repo.builtin.build_systems.makefile import MakefilePackage

from spack.package import *


class SfHello(MakefilePackage):
    """Prints a greeting and the prefix it was built for (a string the install relocates)."""

    homepage = "https://sf-cache.invalid/sf-hello"
    url = "file:///sf-hello-1.0.tar.gz"

    license("Apache-2.0")

    version("1.0", sha256="df7d8dcc9705473a145eacdb9a76099136722365ea51ea4c38406a71657b98e2")

    depends_on("c", type="build")

    def url_for_version(self, version):
        here = os.path.dirname(os.path.abspath(__file__))
        return f"file://{here}/sf-hello-{version}.tar.gz"

    @property
    def build_targets(self):
        return [f"PREFIX={self.prefix}", f"CC={spack_cc}"]

    @property
    def install_targets(self):
        return [f"PREFIX={self.prefix}", "install"]
