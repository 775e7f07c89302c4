//! A test CA made at test time (rcgen) and certificates it signs, as PEM files: no key
//! is ever committed. Used by the rediss:// and the wss:// tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    dir: PathBuf,
}

/// A leaf's files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf certificate, DER (to tell which one a server presents).
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA whose files go in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tsugi-notify test CA");
        let cert = params.self_signed(&ca_key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, ca_key),
            pem: cert.pem(),
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for 127.0.0.1 and localhost, written as `NAME.pem` and `NAME.key`.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_with(name, |_| {})
    }

    /// The same, with `edit` applied to its parameters first (validity, names).
    pub fn leaf_with(&self, name: &str, edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Leaf {
            cert: c,
            key: k,
            der: cert.der().to_vec(),
        }
    }
}
