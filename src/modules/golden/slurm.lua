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
Slurm 25.11.0 (/abcdefg, cpu build), installed by sf-cache.

Prefix:     /opt/slurm/software/slurm-25.11.0-abcdefg (override with SLURM_INSTALL_PREFIX)
SLURM_ROOT: the prefix in use
SLURM_CONF: /etc/slurm/slurm.conf unless SLURM_CONF is already set
]==])

-- One Slurm at a time: another Slurm module (or another workload manager) is swapped out.
conflict("slurm")
family("workloadmanager")

local prefix = os.getenv("SLURM_INSTALL_PREFIX")
if prefix == nil or prefix == "" then
    prefix = "/opt/slurm/software/slurm-25.11.0-abcdefg"
end
-- Refuse a prefix without Slurm (a wrong SLURM_INSTALL_PREFIX, a tree not moved yet).
local scontrol = pathJoin(prefix, "bin", "scontrol")
if mode() == "load" and not isFile(scontrol) then
    LmodError("Slurm 25.11.0: no " .. scontrol .. "; set SLURM_INSTALL_PREFIX to the directory holding Slurm's bin/ and sbin/ (now " .. prefix .. ")")
end

prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("PATH", pathJoin(prefix, "sbin"))
prepend_path("MANPATH", pathJoin(prefix, "share/man"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib"))
prepend_path("PKG_CONFIG_PATH", pathJoin(prefix, "lib/pkgconfig"))
prepend_path("CMAKE_PREFIX_PATH", prefix)
setenv("SLURM_ROOT", prefix)
setenv("SLURM_BUILD_COMPILER", "gcc@13.3.0")
setenv("SLURM_BUILD_TARGET", "x86_64_v3")
setenv("SLURM_BUILD_TYPE", "cpu")

-- A SLURM_CONF set before loading wins; pushenv restores the previous state on unload.
local conf = os.getenv("SLURM_CONF")
if conf == nil or conf == "" then
    conf = "/etc/slurm/slurm.conf"
end
pushenv("SLURM_CONF", conf)
