#![no_main]
use libfuzzer_sys::fuzz_target;

// Buildcache index JSON (database versions 6–8).
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::buildcache::index::Index::parse(data, "fuzz");
});
