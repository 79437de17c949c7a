#![no_main]
use libfuzzer_sys::fuzz_target;

// Layout-v2 `.spec.json.sig`: clearsigned text around a spec file.
fuzz_target!(|data: &[u8]| {
    if let Ok(text) = sf_cache::trust::extract_cleartext(data) {
        let _ = sf_cache::spec::SpecFile::parse(&text);
    }
});
