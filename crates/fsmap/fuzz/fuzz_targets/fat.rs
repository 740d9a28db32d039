//! Fuzzes fsmap's fat entry point; seeds in corpus/fat come from real images (fuzz/seeds.sh).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fsmap::fuzzing::fat(data));
