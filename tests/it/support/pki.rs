//! A throwaway certificate authority for TLS tests: a CA and a server certificate for
//! localhost and 127.0.0.1 signed by it, written as PEM files in a temp dir; more server
//! certificates for other names on request.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A test CA and a server certificate for localhost/127.0.0.1 signed by it, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A server certificate and its key, as PEM files.
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_pki(name: &str) -> Pki {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("switchyard test CA {name}"));
    let issuer = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA cert");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, issuer.pem()).expect("write PEM");
    let mut pki = Pki {
        ca,
        cert: PathBuf::new(),
        key: PathBuf::new(),
        issuer,
        dir,
    };
    let ServerCert { cert, key } = pki.server_cert("server", &["localhost", "127.0.0.1"]);
    (pki.cert, pki.key) = (cert, key);
    pki
}

impl Pki {
    /// The certificate for localhost/127.0.0.1 ([`Pki::cert`] and [`Pki::key`]).
    pub fn localhost_cert(&self) -> ServerCert {
        ServerCert {
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }

    /// A server certificate signed by the CA for `names` (host names or IP addresses), in
    /// `<file>.crt` and `<file>.key`.
    pub fn server_cert(&self, file: &str, names: &[&str]) -> ServerCert {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        let write = |name: String, pem: String| {
            let path = self.dir.path().join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        ServerCert {
            cert: write(format!("{file}.crt"), cert.pem()),
            key: write(format!("{file}.key"), key.serialize_pem()),
        }
    }
}
