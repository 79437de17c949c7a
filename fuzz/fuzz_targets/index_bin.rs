#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

// The binary cached form of an index (read back from the local index cache). The form ends in the
// sha256 of everything before it, which no mutation keeps right: decoding the input as it is only
// exercises that refusal. The input is therefore also decoded sealed with its own checksum, so
// mutations reach the decoder behind the check (the corpus holds bodies without their checksum).
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::buildcache::index_bin::decode(data);
    let mut sealed = Vec::with_capacity(data.len() + 32);
    sealed.extend_from_slice(data);
    sealed.extend_from_slice(&Sha256::digest(data));
    let _ = sf_cache::buildcache::index_bin::decode(&sealed);
});
