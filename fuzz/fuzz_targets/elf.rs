#![no_main]
use libfuzzer_sys::fuzz_target;

// ELF headers, dynamic sections and string tables.
fuzz_target!(|data: &[u8]| {
    let _ = sf_cache::relocate::elf::parse_elf_strings(data, true);
    let map = sf_cache::relocate::PrefixMap::from_pairs([("/opt/build", "/new")]);
    let _ = sf_cache::relocate::elf::elf_updates(data, &map);
});
