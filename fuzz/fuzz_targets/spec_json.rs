#![no_main]
use libfuzzer_sys::fuzz_target;

// Spec files, formats 1–5.
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::spec::SpecFile::parse(data);
});
