#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    callproof_tlog::fuzzing::bundle(data);
});
