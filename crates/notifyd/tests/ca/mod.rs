//! A test CA made at test time (rcgen) and certificates it signs, as PEM files: no key
//! is ever committed. Used by the rediss:// and the wss:// tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
    /// What a leaf's file carries after the leaf: the intermediates up to the root (not
    /// the root), as certbot's fullchain.pem does.
    chain: String,
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
            chain: String::new(),
            dir: dir.to_owned(),
        }
    }

    /// An intermediate CA signed by this one: its leaves' files are full chains.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            chain: format!("{}{}", cert.pem(), self.chain),
            pem: cert.pem(),
            dir: self.dir.clone(),
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
        self.leaf_for_key(name, KeyPair::generate().unwrap(), edit)
    }

    /// A leaf for a key made elsewhere (RSA, from openssl), its key file as that key's
    /// PEM (PKCS#8; callers may overwrite it with another encoding of the same key).
    pub fn leaf_for_key(
        &self,
        name: &str,
        key: KeyPair,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, format!("{}{}", cert.pem(), self.chain)).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        Leaf {
            cert: c,
            key: k,
            der: cert.der().to_vec(),
        }
    }
}
