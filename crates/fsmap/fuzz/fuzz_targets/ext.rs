//! Fuzzes fsmap's ext entry point; seeds in corpus/ext come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::ext(data));
