#![no_main]
use libfuzzer_sys::fuzz_target;

// `.spack/binary_distribution` YAML inside tarballs.
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::buildcache::buildinfo::BuildInfo::parse(data);
});
