//! Configuration files: any text is either a valid configuration or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = tsugi_notifyd::Config::from_toml_str(text) {
            assert!(c.limits.ping_interval < c.limits.idle_timeout);
            let _ = c.summary();
        }
    }
});
