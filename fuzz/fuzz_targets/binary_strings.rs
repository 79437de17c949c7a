#![no_main]
use libfuzzer_sys::fuzz_target;

// Padded C strings inside binaries: the in-place patches never change the length.
fuzz_target!(|data: &[u8]| {
    let map = sf_cache::relocate::PrefixMap::from_pairs([
        ("/opt/build/prefix", "/new"),
        ("/opt/b", "/x/y/z/w/v"),
    ]);
    if let Ok(patches) = sf_cache::relocate::binary::binary_patches(data, &map) {
        for (off, bytes) in patches {
            assert!(off as usize + bytes.len() <= data.len());
        }
    }
});
