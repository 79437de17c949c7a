#![no_main]
use libfuzzer_sys::fuzz_target;

// The binary cached form of an index (read back from the local index cache).
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::buildcache::index_bin::decode(data);
});
