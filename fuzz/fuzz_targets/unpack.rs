#![no_main]
use libfuzzer_sys::fuzz_target;

// Tar member checks and staging of `install::unpack` (plain tar input; each run in a fresh
// directory, which must never be escaped).
fuzz_target!(|data: &[u8]| {
    let Ok(d) = tempfile::tempdir() else { return };
    let staging = d.path().join("s");
    let opts = sf_cache::install::unpack::UnpackOptions {
        allow_setuid: false,
        old_prefix_hint: Some(b"/opt/build/prefix".to_vec()),
        ..Default::default()
    };
    let _ = sf_cache::install::unpack::unpack_tarball(data, &staging, &opts);
    // Nothing may appear beside the staging directory.
    if let Ok(rd) = std::fs::read_dir(d.path()) {
        for e in rd.flatten() {
            assert_eq!(
                e.file_name(),
                "s",
                "unpack wrote outside its staging directory"
            );
        }
    }
});
