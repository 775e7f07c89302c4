//! Token minting and verification (the extension's getToken/decodeToken and the
//! daemon's handshake check). `cargo bench -p tsugi-notify-core`.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tsugi_notify_core::{Keyring, Plaintext, Scope, Tokens};

fn tokens(c: &mut Criterion) {
    let t =
        Tokens::new(Keyring::new(["a-realistic-secret-of-some-length", "an-older-one"]).unwrap());
    let p = Plaintext::new(
        "https://tsugi.example.edu/tsugi",
        "4242",
        Some("77"),
        Some("123456"),
    )
    .unwrap();
    let v1 = t.mint(&p, Scope::Browser).unwrap();
    let legacy = t.mint_legacy(&p).unwrap();
    let mut forged = v1.clone();
    forged.pop();
    forged.push('A');
    c.bench_function("verify v1", |b| {
        b.iter(|| t.verify(black_box(&v1), Scope::Browser).unwrap())
    });
    c.bench_function("verify legacy", |b| {
        b.iter(|| t.verify(black_box(&legacy), Scope::Browser).unwrap())
    });
    c.bench_function("refuse forged v1", |b| {
        b.iter(|| t.verify(black_box(&forged), Scope::Browser).unwrap_err())
    });
    c.bench_function("mint v1", |b| {
        b.iter(|| t.mint(black_box(&p), Scope::Browser).unwrap())
    });
    c.bench_function("keyring of two secrets", |b| {
        b.iter(|| {
            Keyring::new(black_box([
                "a-realistic-secret-of-some-length",
                "an-older-one",
            ]))
            .unwrap()
        })
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
