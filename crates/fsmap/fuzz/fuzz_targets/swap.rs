//! Fuzzes fsmap's swap entry point; seeds in corpus/swap come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::swap(data));
