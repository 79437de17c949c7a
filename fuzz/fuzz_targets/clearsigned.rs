#![no_main]
use libfuzzer_sys::fuzz_target;

// Clearsigned text as manifests and v2 spec files carry it: extraction and verification.
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::trust::extract_cleartext(data);
    let _ = sf_cache::trust::Keyring::builtin().verify_cleartext(data);
});
