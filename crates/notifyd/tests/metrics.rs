//! `/metrics` over the metrics listener: every metric the README or the example
//! configuration names is exported and every metric exported is in the README's table,
//! and `/healthz` answers there as on the main port.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

/// Every `tsugi_notify_*` and `process_*` name written in a document.
fn names_in(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    for prefix in ["tsugi_notify_", "process_"] {
        let mut rest = text.as_str();
        while let Some(at) = rest.find(prefix) {
            // A name starts the word (not `my_process_x`).
            let before = text.len() - rest.len() + at;
            let start_of_word = before == 0
                || !text.as_bytes()[before - 1].is_ascii_alphanumeric()
                    && text.as_bytes()[before - 1] != b'_';
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            if start_of_word && name.len() > prefix.len() && !name.ends_with('_') {
                names.insert(name);
            }
        }
    }
    names
}

/// The metric names in an exposition: each sample's name, a histogram's too.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let name = match line.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next().unwrap_or(""),
            None if line.starts_with('#') => continue,
            None => line.split(['{', ' ']).next().unwrap_or(""),
        };
        names.insert(name.to_owned());
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                names.insert(base.to_owned());
            }
        }
    }
    names
}

#[tokio::test]
async fn every_documented_metric_is_served_and_healthz_answers_on_both_ports() {
    let mut c = config();
    c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    let server = start(c).await;
    let metrics = server.metrics_addr.unwrap();
    // Something in every histogram and family, so that each has samples.
    let mut a = connect(server.addr, &token("1", "u1"), None).await;
    let mut b = connect(server.addr, &token("1", "u2"), None).await;
    send(&mut a, tokio_tungstenite::tungstenite::Message::text("hi")).await;
    recv(&mut b).await;
    assert_eq!(refused_status(server.addr, "not-a-token", None).await, 403);

    let (status, body) = raw_http(metrics, b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n").await;
    assert_eq!(status, 200);
    let served = exported(&body);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut documented = names_in(&root.join("README.md"));
    documented.extend(names_in(&root.join("packaging/tsugi-notifyd.toml")));
    assert!(
        documented.len() > 20,
        "the README's metrics table: {documented:?}"
    );
    let missing: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "documented but not served: {missing:?}\n{body}"
    );
    // And the README's table names every metric served (a histogram by its name).
    let undocumented: Vec<_> = served
        .iter()
        .filter(|n| !["_bucket", "_sum", "_count"].iter().any(|s| n.ends_with(s)))
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the README: {undocumented:?}"
    );
    for histogram in [
        "tsugi_notify_handshake_duration_seconds_count",
        "tsugi_notify_queue_wait_seconds_count",
    ] {
        let line = body
            .lines()
            .find(|l| l.starts_with(histogram))
            .unwrap_or_else(|| panic!("{histogram} missing"));
        assert_ne!(line, format!("{histogram} 0"), "nothing observed: {line}");
    }

    for addr in [server.addr, metrics] {
        let (status, body) = raw_http(addr, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n").await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "/healthz on {addr}");
    }
}
