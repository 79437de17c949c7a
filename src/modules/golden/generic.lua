-- -*- lua -*-
-- py-foo-bar@25.11.0/abcdefg: Lmod module written by sf-cache (test)
-- from templates/modules/generic.lua.j2 (built in).
-- Regenerate it with `sf-cache module`; edits here are lost then.
--
-- The prefix below is where the package was when this file was written. Set
-- PY_FOO_BAR_INSTALL_PREFIX to use the package from another place (a moved or extracted tree
-- that `sf-cache relocate` has fixed up).

whatis("Name: py-foo-bar")
whatis("Version: 25.11.0")
whatis("Hash: abcdefghijklmnopqrstuvwxyz234567")
whatis("Arch: linux-ubuntu24.04-x86_64")

help([==[
py-foo-bar 25.11.0 (/abcdefg), installed by sf-cache.

Prefix: /opt/x/py-foo-bar-1.0-abcdefg (override with PY_FOO_BAR_INSTALL_PREFIX)
]==])

local prefix = os.getenv("PY_FOO_BAR_INSTALL_PREFIX")
if prefix == nil or prefix == "" then
    prefix = "/opt/x/py-foo-bar-1.0-abcdefg"
end

prepend_path("PATH", pathJoin(prefix, "bin"))
setenv("PY_FOO_BAR_ROOT", prefix)
