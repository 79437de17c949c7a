#![no_main]
use libfuzzer_sys::fuzz_target;

// Spec queries (`slurm@25.11 %gcc@13 +nvml`).
fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = sf_cache::spec::Query::parse(s);
    }
});
