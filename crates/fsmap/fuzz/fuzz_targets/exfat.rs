//! Fuzzes fsmap's exfat entry point; seeds in corpus/exfat come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::exfat(data));
