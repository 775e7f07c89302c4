//! A client's request head, its /notify query and its upgrade headers: bounded, never
//! a panic, whatever bytes arrive.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tsugi_notifyd::http::read_request;
use tsugi_notifyd::upgrade::{parse_notify_query, websocket_accept};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut reader = data;
    if let Ok(req) = rt.block_on(read_request(&mut reader, Duration::from_secs(1))) {
        let _ = parse_notify_query(req.query.as_deref());
        let _ = websocket_accept(&req);
        let _ = req.header("origin");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(q) = parse_notify_query(Some(text)) {
            assert!(q.room.as_str().len() <= 256);
        }
    }
});
