//! Certificates made in the test: a CA and leaves that are good, expired, self-signed, for the
//! wrong name, or about to expire.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// The site name every test uses.
pub const SITE: &str = "probe.test";

/// A certificate and its key, as DER (for rustls servers) and PEM files (for nginx).
#[derive(Clone)]
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A test CA whose certificate is written to `ca_path` (pass it as --ca-file).
pub struct Pki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    pub ca_path: PathBuf,
    counter: std::cell::Cell<u32>,
}

impl Pki {
    /// Makes a CA and writes its certificate into `dir`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "probe test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(365);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, cert.pem()).unwrap();
        Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            ca_path,
            counter: std::cell::Cell::new(0),
        }
    }

    /// A leaf for `names`, valid from `now + from_days` to `now + to_days`, signed by the CA
    /// (or by itself when `self_signed`).
    pub fn leaf(&self, names: &[&str], from_days: i64, to_days: i64, self_signed: bool) -> Leaf {
        self.leaf_named(names, names[0], from_days, to_days, self_signed)
    }

    /// `leaf`, with `common_name` as the subject's CN (anything, control characters included:
    /// what a hostile server may present).
    pub fn leaf_named(
        &self,
        names: &[&str],
        common_name: &str,
        from_days: i64,
        to_days: i64,
        self_signed: bool,
    ) -> Leaf {
        let now = OffsetDateTime::now_utc();
        // An hour more than asked, so "5 days" still reads 5 whole days when the probe runs.
        let (from, to) = (
            now + Duration::days(from_days),
            now + Duration::days(to_days) + Duration::hours(1),
        );
        self.leaf_between(names, common_name, from, to, self_signed)
    }

    /// A leaf for `names` signed by the CA, valid until `not_after` (from a year before it):
    /// for a clock the test compresses.
    pub fn leaf_until(&self, names: &[&str], not_after: OffsetDateTime) -> Leaf {
        let from = not_after - Duration::days(365);
        self.leaf_between(names, names[0], from, not_after, false)
    }

    fn leaf_between(
        &self,
        names: &[&str],
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        self_signed: bool,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            rcgen::DnValue::Utf8String(common_name.to_string()),
        );
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let (cert, chain) = if self_signed {
            let cert = params.self_signed(&key).unwrap();
            let der = cert.der().clone();
            (cert, vec![der])
        } else {
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            let der = cert.der().clone();
            (cert, vec![der, self.ca_der.clone()])
        };
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let cert_path = self.dir.join(format!("leaf{n}.pem"));
        let key_path = self.dir.join(format!("leaf{n}.key"));
        // nginx sends what the file holds: the leaf, then the CA, as a real chain would be.
        let issuer_pem = if self_signed {
            ""
        } else {
            self.ca_pem.as_str()
        };
        std::fs::write(&cert_path, cert.pem() + issuer_pem).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Leaf {
            chain,
            key_der: key.serialize_der(),
            cert_path,
            key_path,
        }
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    pub fn good(&self) -> Leaf {
        self.leaf(&[SITE], -1, 90, false)
    }
    pub fn expired(&self) -> Leaf {
        self.leaf(&[SITE], -60, -30, false)
    }
    pub fn expiring_in_5_days(&self) -> Leaf {
        self.leaf(&[SITE], -80, 5, false)
    }
    pub fn wrong_name(&self) -> Leaf {
        self.leaf(&["other.test"], -1, 90, false)
    }
    pub fn self_signed(&self) -> Leaf {
        self.leaf(&[SITE], -1, 90, true)
    }
}

/// A CA in a temp dir of its own, with its certificate's path ready for `--ca-file`.
pub struct TempPki {
    _dir: tempfile::TempDir,
    pub pki: Pki,
    /// The CA certificate's path, as an argument.
    pub ca: String,
}

impl TempPki {
    /// The temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let ca = pki.ca_path.display().to_string();
        Self { _dir: dir, pki, ca }
    }
}
