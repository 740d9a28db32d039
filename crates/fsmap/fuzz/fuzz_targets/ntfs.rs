//! Fuzzes fsmap's ntfs entry point; seeds in corpus/ntfs come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::ntfs(data));
