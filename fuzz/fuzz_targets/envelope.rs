//! Envelopes from other nodes (anything may arrive on a Redis channel): decoded or
//! ignored, never a panic; what decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsugi_notifyd::backplane::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Some(e) = Envelope::decode(data) {
        assert_eq!(e.encode().as_deref(), Some(data));
    }
});
