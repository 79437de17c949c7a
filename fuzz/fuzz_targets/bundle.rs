#![no_main]
use libfuzzer_sys::fuzz_target;

// One-file bundles (`mirror --bundle`): header, member checks, verification.
fuzz_target!(|data: &[u8]| {
    let Ok(d) = tempfile::tempdir() else { return };
    let file = d.path().join("b.sfbundle");
    if std::fs::write(&file, data).is_err() {
        return;
    }
    let _ = sf_cache::mirror::bundle::extract_bundle(&file, &d.path().join("out"));
});
