#![no_main]
//! See `sipedge::fuzzing::framing` for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sipedge::fuzzing::framing(data));
