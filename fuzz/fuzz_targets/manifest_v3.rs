#![no_main]
use libfuzzer_sys::fuzz_target;

// Layout-v3 manifests (after the clearsign armor is removed).
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::buildcache::manifest::Manifest::parse(data, "fuzz");
});
