-- -*- lua -*-
-- Slurm 25.11.0 (/abcdefg): Lmod module written by sf-cache (test)
-- from templates/modules/slurm.lua.j2 (built in).
-- Regenerate it with `sf-cache module`; edits here are lost then.
--
-- The prefix below is where Slurm was when this file was written. Set SLURM_INSTALL_PREFIX
-- to use Slurm from another place (a moved or extracted tree that `sf-cache relocate`
-- has fixed up).

whatis("Name: Slurm")
whatis("Version: 25.11.0")
whatis("Hash: abcdefghijklmnopqrstuvwxyz234567")
whatis("Arch: linux-ubuntu24.04-x86_64")
whatis("Description: Slurm workload manager: client commands, daemons, libraries")

help([==[
Slurm 25.11.0 (/abcdefg), installed by sf-cache.

Prefix:     /opt/slurm/software/slurm-25.11.0-abcdefg (override with SLURM_INSTALL_PREFIX)
SLURM_ROOT: the prefix in use
SLURM_CONF: /etc/slurm/slurm.conf unless SLURM_CONF is already set
]==])

family("workloadmanager")

local prefix = os.getenv("SLURM_INSTALL_PREFIX")
if prefix == nil or prefix == "" then
    prefix = "/opt/slurm/software/slurm-25.11.0-abcdefg"
end

prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("PATH", pathJoin(prefix, "sbin"))
prepend_path("MANPATH", pathJoin(prefix, "share/man"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib"))
prepend_path("PKG_CONFIG_PATH", pathJoin(prefix, "lib/pkgconfig"))
prepend_path("CMAKE_PREFIX_PATH", prefix)
setenv("SLURM_ROOT", prefix)

-- A SLURM_CONF set before loading wins; pushenv restores the previous state on unload.
local conf = os.getenv("SLURM_CONF")
if conf == nil or conf == "" then
    conf = "/etc/slurm/slurm.conf"
end
pushenv("SLURM_CONF", conf)
