#!/bin/sh
# Rendered by sf-cache build; do not edit (it is written anew for every build).
set -eu
# One stream: Spack's messages and the build output stay in order in the log.
exec 2>&1
echo "==> sf-cache build: $(/sf-cache/spack/bin/spack --version 2>/dev/null || echo 'spack (version unknown)')"
/sf-cache/spack/bin/spack -e /sf-cache/env buildcache keys --install --trust
exec /sf-cache/spack/bin/spack -e /sf-cache/env install --fail-fast -v --keep-stage
