//! `test-ca DIR`: a test CA made now, and a certificate it signs for 127.0.0.1 and
//! localhost, written to DIR as ca.pem, server.pem and server.key (for the Node and
//! browser tests over wss://; no key is ever committed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/ca/mod.rs"]
mod ca;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: test-ca DIR");
    let ca = ca::TestCa::new(std::path::Path::new(&dir));
    let leaf = ca.leaf("server");
    println!("{}", ca.ca_file().display());
    println!("{}", leaf.cert.display());
    println!("{}", leaf.key.display());
}
