//! kms-plugin: see `kms_plugin::fuzzing::share_files` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kms_plugin::fuzzing::share_files(data);
});
