#![no_main]
use libfuzzer_sys::fuzz_target;

// Spack environment lockfiles (versions 5–6).
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::spec::spack_lock::SpackLock::parse(data);
});
