//! Certificates for TLS tests, made at test time: a CA, server certificates
//! issued by it as PEM files in a temp dir, a client that trusts it, and the
//! `[[listeners]]` entry that serves them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

/// A test CA and the files of the server certificates it issued.
pub struct Pki {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "odoo-edge test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Pki {
            root: cert.der().clone(),
            issuer: Issuer::new(params, key),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Writes `<stem>.pem` and `<stem>.key` for `names`; returns the
    /// certificate as a client will see it.
    pub fn issue(&self, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        std::fs::write(self.path(stem, "pem"), cert.pem()).expect("write cert");
        std::fs::write(self.path(stem, "key"), key.serialize_pem()).expect("write key");
        cert.der().clone()
    }

    pub fn path(&self, stem: &str, ext: &str) -> PathBuf {
        self.dir.path().join(format!("{stem}.{ext}"))
    }

    /// A client that trusts this CA and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).expect("trust the test CA");
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// A `[[listeners]]` entry with TLS serving the certificates `stems`, for
/// `Cluster::config`.
pub fn tls_listener(pki: &Pki, stems: &[&str], extra: &str) -> String {
    let certs: Vec<String> = stems
        .iter()
        .map(|s| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                path_str(&pki.path(s, "pem")),
                path_str(&pki.path(s, "key"))
            )
        })
        .collect();
    format!(
        "\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{}]\n{extra}\n",
        certs.join(", ")
    )
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}
