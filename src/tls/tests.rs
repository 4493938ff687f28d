//! Certificates and keys are made with rcgen at test time and written to a
//! temp dir; handshakes run in memory between a rustls client that trusts
//! the test CA and the server config under test.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RsaKeySize,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind,
    ProtocolVersion, RootCertStore, ServerConfig, ServerConnection, SignatureScheme,
};
use tempfile::TempDir;

use super::*;

// === certificates ===

/// A certificate authority that issues test certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn root(name: &str) -> Self {
        let key = KeyPair::generate().expect("a P-256 key");
        let params = ca_params(name);
        let cert = params.self_signed(&key).expect("a self-signed CA");
        TestCa {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().expect("a P-256 key");
        let params = ca_params(name);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("an intermediate CA");
        TestCa {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// A server certificate for `names`, valid from 1975 to 4096.
    fn leaf(&self, names: &[&str], key: &KeyPair) -> rcgen::Certificate {
        self.leaf_with(names, key, |_| {})
    }

    fn leaf_with(
        &self,
        names: &[&str],
        key: &KeyPair,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> rcgen::Certificate {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("valid names");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("no name"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        params.signed_by(key, &self.issuer).expect("a leaf")
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .expect("the test CA is a valid root");
        roots
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

fn rsa() -> KeyPair {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).expect("an RSA key")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// PEM of a chain: the server certificate, then its issuers.
fn chain_pem(chain: &[&rcgen::Certificate]) -> String {
    chain.iter().map(|c| c.pem()).collect()
}

// --- DER surgery, to turn rcgen's PKCS#8 keys into PKCS#1 and SEC1 ---

/// Header length and content length of the DER element starting `der`.
fn der_header(der: &[u8]) -> (usize, usize) {
    let first = der[1] as usize;
    if first < 0x80 {
        (2, first)
    } else {
        let n = first & 0x7f;
        let len = der[2..2 + n]
            .iter()
            .fold(0, |acc, &b| (acc << 8) | b as usize);
        (2 + n, len)
    }
}

/// The elements (each with its header) inside the constructed element `der`.
fn der_children(der: &[u8]) -> Vec<&[u8]> {
    let (header, len) = der_header(der);
    let mut rest = &der[header..header + len];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (h, l) = der_header(rest);
        out.push(&rest[..h + l]);
        rest = &rest[h + l..];
    }
    out
}

fn der_element(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The key inside a PKCS#8 PrivateKeyInfo: PKCS#1 for RSA, SEC1 for EC.
fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    let octets = der_children(pkcs8)[2];
    assert_eq!(octets[0], 0x04, "privateKey is an OCTET STRING");
    let (h, len) = der_header(octets);
    octets[h..h + len].to_vec()
}

/// A SEC1 ECPrivateKey as OpenSSL writes it: with the curve (P-256) named.
fn sec1_p256(key: &KeyPair) -> Vec<u8> {
    let sec1 = pkcs8_inner(key.serialized_der());
    let children = der_children(&sec1);
    assert_eq!(children[0], [0x02, 0x01, 0x01], "ECPrivateKey version 1");
    if children.iter().any(|c| c[0] == 0xa0) {
        return sec1;
    }
    // [0] { OID 1.2.840.10045.3.1.7 (prime256v1) }
    let curve = [
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    let mut content = Vec::new();
    content.extend_from_slice(children[0]);
    content.extend_from_slice(children[1]);
    content.extend_from_slice(&curve);
    for child in &children[2..] {
        content.extend_from_slice(child);
    }
    der_element(0x30, &content)
}

/// An RSA key as PKCS#1 (PEM label `RSA PRIVATE KEY`).
fn pkcs1_rsa(key: &KeyPair) -> Vec<u8> {
    let der = key.serialized_der();
    // PKCS#8 has an AlgorithmIdentifier SEQUENCE second; PKCS#1 the modulus.
    if der_children(der)[1][0] == 0x30 {
        pkcs8_inner(der)
    } else {
        der.to_vec()
    }
}

/// An RSA key as PKCS#8 (PEM label `PRIVATE KEY`).
fn pkcs8_rsa(key: &KeyPair) -> Vec<u8> {
    let der = key.serialized_der();
    if der_children(der)[1][0] == 0x30 {
        der.to_vec()
    } else {
        // SEQUENCE { 0, { rsaEncryption, NULL }, OCTET STRING pkcs1 }
        let mut content = vec![0x02, 0x01, 0x00];
        content.extend_from_slice(&[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ]);
        content.extend(der_element(0x04, der));
        der_element(0x30, &content)
    }
}

/// Files in a temp dir that lives as long as this.
struct Files {
    dir: TempDir,
}

impl Files {
    fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("the temp dir is writable");
        path
    }

    /// A chain file and a PKCS#8 key file named after `name`.
    fn pair(&self, name: &str, chain: &[&rcgen::Certificate], key: &KeyPair) -> CertificateFiles {
        CertificateFiles {
            cert: self.write(&format!("{name}.pem"), &chain_pem(chain)),
            key: self.write(&format!("{name}.key"), &key.serialize_pem()),
        }
    }
}

fn config(
    certs: &[CertificateFiles],
    default: usize,
    unknown_sni: UnknownSni,
) -> Arc<ServerConfig> {
    server_config(certs, default, unknown_sni, true).expect("the certificates load")
}

fn file_errors(result: Result<Arc<ServerConfig>, TlsError>) -> Vec<FileError> {
    match result {
        Err(TlsError::Files(errors)) => errors,
        Err(other) => panic!("expected file errors, got: {other}"),
        Ok(_) => panic!("expected file errors, the certificates loaded"),
    }
}

fn tls_config(certs: Vec<CertificateFiles>, default: usize) -> TlsConfig {
    let server = config(&certs, default, UnknownSni::Default);
    TlsConfig {
        certificates: certs,
        default_certificate: default,
        unknown_sni: UnknownSni::Default,
        handshake_timeout: Duration::from_secs(10),
        hsts: None,
        http2: true,
        server,
    }
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).expect("a valid date")
}

// === in-memory handshakes ===

/// Verifies as a browser would (the test CA, the SNI name) and remembers
/// which certificate the server sent.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    served: Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.served.lock().expect("not poisoned") = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client that trusts one CA and offers `h2` and `http/1.1`.
struct Client {
    config: Arc<ClientConfig>,
    recorder: Arc<Recorder>,
}

/// What one handshake came to.
struct Handshake {
    client: ClientConnection,
    /// The server certificate the client was sent (not on a resumption).
    served: Option<CertificateDer<'static>>,
    /// The first error on either side: the server's, else the client's.
    server_error: Option<rustls::Error>,
    client_error: Option<rustls::Error>,
}

impl Handshake {
    fn expect_ok(self) -> Self {
        assert!(
            self.server_error.is_none() && self.client_error.is_none(),
            "handshake failed: server {:?}, client {:?}",
            self.server_error,
            self.client_error
        );
        self
    }
}

impl Client {
    fn trusting(ca: &TestCa) -> Self {
        Self::with_versions(ca, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    fn with_versions(ca: &TestCa, versions: &[&'static rustls::SupportedProtocolVersion]) -> Self {
        let inner = WebPkiServerVerifier::builder(Arc::new(ca.roots()))
            .build()
            .expect("a verifier");
        let recorder = Arc::new(Recorder {
            inner,
            served: Mutex::new(None),
        });
        let mut config = ClientConfig::builder_with_protocol_versions(versions)
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Client {
            config: Arc::new(config),
            recorder,
        }
    }

    fn connect(&self, server: &Arc<ServerConfig>, sni: &str) -> Handshake {
        *self.recorder.served.lock().expect("not poisoned") = None;
        let name = ServerName::try_from(sni.to_owned()).expect("a DNS name");
        let mut client =
            ClientConnection::new(self.config.clone(), name).expect("a client connection");
        let mut server = ServerConnection::new(server.clone()).expect("a server connection");
        let (server_error, client_error) = pump(&mut client, &mut server);
        Handshake {
            client,
            served: self.recorder.served.lock().expect("not poisoned").take(),
            server_error,
            client_error,
        }
    }
}

/// Moves TLS records both ways until neither side has anything to say or
/// one side fails (its alert is still delivered to the other).
fn pump(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> (Option<rustls::Error>, Option<rustls::Error>) {
    for _ in 0..50 {
        let mut flight = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut flight).expect("writing to a Vec");
        }
        let mut rd = &flight[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("reading from a slice");
            if let Err(e) = server.process_new_packets() {
                let mut alert = Vec::new();
                while server.wants_write() {
                    server.write_tls(&mut alert).expect("writing to a Vec");
                }
                let _ = client.read_tls(&mut &alert[..]);
                return (Some(e), client.process_new_packets().err());
            }
        }
        let mut flight = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut flight).expect("writing to a Vec");
        }
        let mut rd = &flight[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("reading from a slice");
            if let Err(e) = client.process_new_packets() {
                return (None, Some(e));
            }
        }
        if !client.is_handshaking()
            && !server.is_handshaking()
            && !client.wants_write()
            && !server.wants_write()
        {
            return (None, None);
        }
    }
    panic!("the handshake did not settle in 50 flights");
}

// === loading ===

#[test]
fn a_pkcs8_p256_key_loads_and_serves() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    assert!(
        key.serialize_pem()
            .starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----"))
    );
    let server = config(&[files.pair("erp", &[&leaf], &key)], 0, UnknownSni::Refuse);
    let hs = Client::trusting(&ca)
        .connect(&server, "erp.example.com")
        .expect_ok();
    assert_eq!(hs.served.as_ref(), Some(leaf.der()));
}

#[test]
fn rsa_keys_load_as_pkcs1_and_as_pkcs8() {
    let ca = TestCa::root("Test CA");
    let key = rsa();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let cert = files.write("erp.pem", &leaf.pem());
    for (label, der) in [
        ("RSA PRIVATE KEY", pkcs1_rsa(&key)),
        ("PRIVATE KEY", pkcs8_rsa(&key)),
    ] {
        let pair = CertificateFiles {
            cert: cert.clone(),
            key: files.write("erp.key", &pem(label, &der)),
        };
        let server = config(&[pair], 0, UnknownSni::Refuse);
        let hs = Client::trusting(&ca)
            .connect(&server, "erp.example.com")
            .expect_ok();
        assert_eq!(hs.served.as_ref(), Some(leaf.der()), "{label}");
    }
}

#[test]
fn a_sec1_ec_key_loads_and_serves() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let pair = CertificateFiles {
        cert: files.write("erp.pem", &leaf.pem()),
        key: files.write("erp.key", &pem("EC PRIVATE KEY", &sec1_p256(&key))),
    };
    let server = config(&[pair], 0, UnknownSni::Refuse);
    let hs = Client::trusting(&ca)
        .connect(&server, "erp.example.com")
        .expect_ok();
    assert_eq!(hs.served.as_ref(), Some(leaf.der()));
}

#[test]
fn a_certificate_and_key_in_one_file_load() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let both = files.write("erp.pem", &format!("{}{}", leaf.pem(), key.serialize_pem()));
    let pair = CertificateFiles {
        cert: both.clone(),
        key: both,
    };
    assert!(server_config(&[pair], 0, UnknownSni::Refuse, true).is_ok());
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_on_the_key() {
    let ca = TestCa::root("Test CA");
    let leaf = ca.leaf(&["erp.example.com"], &p256());
    let files = Files::new();
    let pair = files.pair("erp", &[&leaf], &p256());
    let errors = file_errors(server_config(
        std::slice::from_ref(&pair),
        0,
        UnknownSni::Default,
        true,
    ));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].certificate, 0);
    assert_eq!(errors[0].part, Part::Key);
    assert_eq!(errors[0].path, pair.key);
    assert!(matches!(errors[0].reason, FileProblem::KeyMismatch(ref cert) if *cert == pair.cert));
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: does not match the certificate in {}",
            pair.key.display(),
            pair.cert.display()
        )
    );
}

#[test]
fn every_unusable_file_is_named_with_its_reason() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let good = files.pair("good", &[&leaf], &key);
    let missing = files.dir.path().join("missing.pem");
    let certs = [
        good.clone(),
        // A missing chain and, in the same pair, a key file given as the chain.
        CertificateFiles {
            cert: missing.clone(),
            key: good.cert.clone(),
        },
        CertificateFiles {
            cert: good.key.clone(),
            key: good.key.clone(),
        },
        CertificateFiles {
            cert: files.dir.path().to_owned(),
            key: good.key.clone(),
        },
    ];
    let errors = file_errors(server_config(&certs, 0, UnknownSni::Default, true));
    let seen: Vec<(usize, Part, String)> = errors
        .iter()
        .map(|e| (e.certificate, e.part, e.reason.to_string()))
        .collect();
    let no_key = "no private key in the file (expected a PEM block labelled \"PRIVATE KEY\", \
                  \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")";
    let no_cert = "no certificate in the file (expected a PEM \"BEGIN CERTIFICATE\" block)";
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0].0, 1);
    assert_eq!(seen[0].1, Part::Cert);
    assert!(seen[0].2.starts_with("cannot be read: "), "{}", seen[0].2);
    assert_eq!(seen[1], (1, Part::Key, no_key.to_owned()));
    assert_eq!(seen[2], (2, Part::Cert, no_cert.to_owned()));
    assert_eq!(seen[3], (3, Part::Cert, "not a regular file".to_owned()));
    assert_eq!(errors[0].path, missing);
}

#[test]
fn an_encrypted_key_is_refused_with_advice() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let pair = CertificateFiles {
        cert: files.write("erp.pem", &leaf.pem()),
        // The content does not matter: the block type says it all.
        key: files.write(
            "erp.key",
            &pem("ENCRYPTED PRIVATE KEY", key.serialized_der()),
        ),
    };
    let errors = file_errors(server_config(&[pair], 0, UnknownSni::Default, true));
    assert_eq!(errors.len(), 1);
    assert!(matches!(errors[0].reason, FileProblem::EncryptedKey));
    assert!(
        errors[0].to_string().contains("openssl pkey"),
        "{}",
        errors[0]
    );
}

#[test]
fn an_unsupported_key_type_is_refused() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf(&["erp.example.com"], &key);
    // An Ed25519 PKCS#8 key relabelled X25519 (1.3.101.112 -> .110): a key
    // exchange key, which cannot sign.
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
    let mut der = ed.serialized_der().to_vec();
    let oid = der
        .windows(5)
        .position(|w| w == [0x06, 0x03, 0x2b, 0x65, 0x70])
        .expect("the Ed25519 OID");
    der[oid + 4] = 0x6e;
    let files = Files::new();
    let pair = CertificateFiles {
        cert: files.write("erp.pem", &leaf.pem()),
        key: files.write("erp.key", &pem("PRIVATE KEY", &der)),
    };
    let errors = file_errors(server_config(&[pair], 0, UnknownSni::Default, true));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].part, Part::Key);
    assert!(
        matches!(errors[0].reason, FileProblem::UnsupportedKey(_)),
        "{}",
        errors[0]
    );
}

#[test]
fn no_certificate_or_a_default_out_of_range_is_refused() {
    assert!(matches!(
        server_config(&[], 0, UnknownSni::Default, true),
        Err(TlsError::NoCertificates)
    ));
    let ca = TestCa::root("Test CA");
    let key = p256();
    let files = Files::new();
    let pair = files.pair("erp", &[&ca.leaf(&["erp.example.com"], &key)], &key);
    assert!(matches!(
        server_config(&[pair], 1, UnknownSni::Default, true),
        Err(TlsError::DefaultOutOfRange {
            default: 1,
            count: 1
        })
    ));
}

// === SNI ===

/// `erp.example.com` (exact), `*.example.com` (wildcard) and
/// `www.example.org`, in that order, each with its own key.
struct ThreeSites {
    ca: TestCa,
    erp: rcgen::Certificate,
    wildcard: rcgen::Certificate,
    org: rcgen::Certificate,
    certs: Vec<CertificateFiles>,
    _files: Files,
}

fn three_sites() -> ThreeSites {
    let ca = TestCa::root("Test CA");
    let files = Files::new();
    let (k1, k2, k3) = (p256(), p256(), p256());
    let erp = ca.leaf(&["erp.example.com"], &k1);
    let wildcard = ca.leaf(&["*.example.com"], &k2);
    let org = ca.leaf(&["www.example.org", "example.org"], &k3);
    let certs = vec![
        files.pair("erp", &[&erp], &k1),
        files.pair("wildcard", &[&wildcard], &k2),
        files.pair("org", &[&org], &k3),
    ];
    ThreeSites {
        ca,
        erp,
        wildcard,
        org,
        certs,
        _files: files,
    }
}

#[test]
fn sni_picks_the_certificate_naming_the_host_exactly() {
    let sites = three_sites();
    let server = config(&sites.certs, 1, UnknownSni::Refuse);
    let client = Client::trusting(&sites.ca);
    let hs = client.connect(&server, "erp.example.com").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(sites.erp.der()));
    let hs = client.connect(&server, "example.org").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(sites.org.der()));
    // Names are compared without regard to case.
    let hs = client.connect(&server, "WWW.Example.ORG").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(sites.org.der()));
}

#[test]
fn a_wildcard_covers_exactly_one_label() {
    let sites = three_sites();
    let server = config(&sites.certs, 0, UnknownSni::Refuse);
    let client = Client::trusting(&sites.ca);
    let hs = client.connect(&server, "shop.example.com").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(sites.wildcard.der()));
    for uncovered in ["a.shop.example.com", "example.com"] {
        let hs = client.connect(&server, uncovered);
        assert!(hs.served.is_none(), "{uncovered} must be refused");
        assert!(hs.server_error.is_some(), "{uncovered} must be refused");
    }
}

#[test]
fn an_exact_name_wins_over_an_earlier_wildcard() {
    let sites = three_sites();
    // The wildcard first this time.
    let certs = vec![sites.certs[1].clone(), sites.certs[0].clone()];
    let server = config(&certs, 0, UnknownSni::Refuse);
    let hs = Client::trusting(&sites.ca)
        .connect(&server, "erp.example.com")
        .expect_ok();
    assert_eq!(hs.served.as_ref(), Some(sites.erp.der()));
}

#[test]
fn of_two_certificates_for_one_name_the_first_listed_is_served() {
    let ca = TestCa::root("Test CA");
    let files = Files::new();
    let (k1, k2) = (p256(), p256());
    let first = ca.leaf(&["erp.example.com"], &k1);
    let second = ca.leaf(&["erp.example.com", "other.example.com"], &k2);
    let certs = [
        files.pair("first", &[&first], &k1),
        files.pair("second", &[&second], &k2),
    ];
    let server = config(&certs, 0, UnknownSni::Refuse);
    let client = Client::trusting(&ca);
    let hs = client.connect(&server, "erp.example.com").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(first.der()));
    let hs = client.connect(&server, "other.example.com").expect_ok();
    assert_eq!(hs.served.as_ref(), Some(second.der()));
}

#[test]
fn an_unknown_name_gets_the_default_certificate() {
    let sites = three_sites();
    let server = config(&sites.certs, 2, UnknownSni::Default);
    let hs = Client::trusting(&sites.ca).connect(&server, "unknown.example.net");
    assert_eq!(hs.served.as_ref(), Some(sites.org.der()));
    // As a browser would: the certificate does not name the host.
    assert!(
        matches!(
            hs.client_error,
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{:?}",
        hs.client_error
    );
}

#[test]
fn an_unknown_name_is_refused_when_unknown_sni_is_refuse() {
    let sites = three_sites();
    let server = config(&sites.certs, 0, UnknownSni::Refuse);
    let hs = Client::trusting(&sites.ca).connect(&server, "unknown.example.net");
    assert!(hs.served.is_none());
    assert!(
        matches!(hs.server_error, Some(rustls::Error::General(_))),
        "{:?}",
        hs.server_error
    );
    assert_eq!(
        hs.client_error,
        Some(rustls::Error::AlertReceived(AlertDescription::AccessDenied))
    );
}

#[test]
fn the_resolver_matches_names_and_falls_back_as_configured() {
    let sites = three_sites();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let load = || {
        sites
            .certs
            .iter()
            .enumerate()
            .map(|(i, files)| load_pair(i, files, &provider).expect("loads"))
            .collect::<Vec<_>>()
    };
    let default = SniResolver::new(load(), 2, UnknownSni::Default);
    let refuse = SniResolver::new(load(), 2, UnknownSni::Refuse);
    for (name, chosen) in [
        (Some("erp.example.com"), Some(0)),
        (Some("erp.example.com."), Some(0)),
        (Some("crm.example.com"), Some(1)),
        (Some("example.org"), Some(2)),
        (Some("example.com"), None),
        (Some("a.b.example.com"), None),
        (Some(".example.com"), None),
        (None, None),
    ] {
        assert_eq!(refuse.choose(name), chosen, "{name:?} with refuse");
        assert_eq!(
            default.choose(name),
            chosen.or(Some(2)),
            "{name:?} with default"
        );
    }
}

// === protocols ===

#[test]
fn alpn_offers_h2_only_with_http2() {
    let sites = three_sites();
    let client = Client::trusting(&sites.ca);
    for (http2, offered, chosen) in [
        (true, vec![b"h2".to_vec(), b"http/1.1".to_vec()], &b"h2"[..]),
        (false, vec![b"http/1.1".to_vec()], &b"http/1.1"[..]),
    ] {
        let server = server_config(&sites.certs, 0, UnknownSni::Refuse, http2).expect("loads");
        assert_eq!(server.alpn_protocols, offered);
        let hs = client.connect(&server, "erp.example.com").expect_ok();
        assert_eq!(hs.client.alpn_protocol(), Some(chosen), "http2 = {http2}");
    }
}

#[test]
fn tls_1_2_and_1_3_are_served_and_sessions_resume() {
    let sites = three_sites();
    let server = config(&sites.certs, 0, UnknownSni::Refuse);
    assert!(server.ticketer.enabled(), "stateless tickets are on");
    assert_eq!(server.max_early_data_size, 0, "no 0-RTT");
    for (version, protocol) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let client = Client::with_versions(&sites.ca, &[version]);
        let first = client.connect(&server, "erp.example.com").expect_ok();
        assert_eq!(first.client.protocol_version(), Some(protocol));
        assert_eq!(first.client.handshake_kind(), Some(HandshakeKind::Full));
        let again = client.connect(&server, "erp.example.com").expect_ok();
        assert_eq!(
            again.client.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{protocol:?}"
        );
    }
}

// === check ===

#[test]
fn check_lists_names_and_finds_nothing_wrong_in_good_chains() {
    let root = TestCa::root("Test Root");
    let inter = root.intermediate("Test Intermediate");
    let key = p256();
    let leaf = inter.leaf(&["erp.example.com", "*.erp.example.com"], &key);
    let files = Files::new();
    let tls = tls_config(
        vec![files.pair("erp", &[&leaf, &inter.cert, &root.cert], &key)],
        0,
    );
    let check = check(&tls, at("2030-01-01T00:00:00Z"));
    assert!(check.errors.is_empty(), "{:?}", check.errors);
    assert!(check.warnings.is_empty(), "{:?}", check.warnings);
    assert_eq!(
        check.certificates[0].names,
        ["erp.example.com", "*.erp.example.com"]
    );
    assert_eq!(
        check.certificates[0].to_string(),
        format!(
            "{}: erp.example.com, *.erp.example.com; valid until 4096-01-01T00:00:00Z",
            tls.certificates[0].cert.display()
        )
    );
}

#[test]
fn check_reports_an_expired_and_a_not_yet_valid_certificate() {
    let ca = TestCa::root("Test CA");
    let files = Files::new();
    let (k1, k2) = (p256(), p256());
    let old = ca.leaf_with(&["old.example.com"], &k1, |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let early = ca.leaf_with(&["early.example.com"], &k2, |p| {
        p.not_before = rcgen::date_time_ymd(2031, 6, 1);
        p.not_after = rcgen::date_time_ymd(2032, 6, 1);
    });
    let tls = tls_config(
        vec![
            files.pair("old", &[&old], &k1),
            files.pair("early", &[&early], &k2),
        ],
        0,
    );
    let check = check(&tls, at("2030-01-01T00:00:00Z"));
    let (old_path, early_path) = (
        tls.certificates[0].cert.display(),
        tls.certificates[1].cert.display(),
    );
    assert_eq!(
        check.errors,
        [
            format!("{old_path}: expired on 2020-01-01T00:00:00Z"),
            format!("{early_path}: is not valid before 2031-06-01T00:00:00Z"),
        ]
    );
    assert_eq!(
        check.certificates[0].errors,
        ["expired on 2020-01-01T00:00:00Z"]
    );
    assert!(check.warnings.is_empty(), "{:?}", check.warnings);
}

#[test]
fn check_warns_two_weeks_before_expiry() {
    let ca = TestCa::root("Test CA");
    let key = p256();
    let leaf = ca.leaf_with(&["erp.example.com"], &key, |p| {
        p.not_after = rcgen::date_time_ymd(2030, 1, 15);
    });
    let files = Files::new();
    let tls = tls_config(vec![files.pair("erp", &[&leaf], &key)], 0);
    let path = tls.certificates[0].cert.display();
    let soon = check(&tls, at("2030-01-10T00:00:00Z"));
    assert!(soon.errors.is_empty(), "{:?}", soon.errors);
    assert_eq!(
        soon.warnings,
        [format!(
            "{path}: expires in 5 days, on 2030-01-15T00:00:00Z: renew it"
        )]
    );
    // Just over 14 days ahead: nothing to say yet.
    let early = check(&tls, at("2029-12-31T23:00:00Z"));
    assert!(early.warnings.is_empty(), "{:?}", early.warnings);
}

#[test]
fn check_finds_a_chain_out_of_order() {
    let root = TestCa::root("Test Root");
    let inter = root.intermediate("Test Intermediate");
    let key = p256();
    let leaf = inter.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let tls = tls_config(
        vec![files.pair("erp", &[&leaf, &root.cert, &inter.cert], &key)],
        0,
    );
    let check = check(&tls, at("2030-01-01T00:00:00Z"));
    let path = tls.certificates[0].cert.display();
    assert_eq!(
        check.errors,
        [
            format!(
                "{path}: certificate 2 in the file (CN=Test Root) is not the issuer of \
                 certificate 1 (CN=erp.example.com): the file must hold the server \
                 certificate first, then each certificate's issuer in turn"
            ),
            format!(
                "{path}: certificate 3 in the file (CN=Test Intermediate) is not the issuer of \
                 certificate 2 (CN=Test Root): the file must hold the server \
                 certificate first, then each certificate's issuer in turn"
            ),
        ]
    );
}

#[test]
fn check_only_warns_about_an_expired_issuer() {
    let root = TestCa::root("Test Root");
    let inter_key = KeyPair::generate().expect("a P-256 key");
    let mut inter_params = ca_params("Old Intermediate");
    inter_params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let inter_cert = inter_params
        .signed_by(&inter_key, &root.issuer)
        .expect("an intermediate");
    let inter = TestCa {
        issuer: Issuer::new(inter_params, inter_key),
        cert: inter_cert,
    };
    let key = p256();
    let leaf = inter.leaf(&["erp.example.com"], &key);
    let files = Files::new();
    let tls = tls_config(vec![files.pair("erp", &[&leaf, &inter.cert], &key)], 0);
    let check = check(&tls, at("2030-01-01T00:00:00Z"));
    assert!(check.errors.is_empty(), "{:?}", check.errors);
    assert_eq!(check.warnings.len(), 1, "{:?}", check.warnings);
    assert!(
        check.warnings[0].contains(
            "certificate 2 in the file (CN=Old Intermediate) expired on 2020-01-01T00:00:00Z"
        ),
        "{}",
        check.warnings[0]
    );
}

#[test]
fn check_warns_about_names_covered_twice_and_a_default_without_names() {
    let ca = TestCa::root("Test CA");
    let files = Files::new();
    let (k1, k2, k3) = (p256(), p256(), p256());
    let nameless = ca.leaf(&[], &k1);
    let first = ca.leaf(&["erp.example.com"], &k2);
    let second = ca.leaf(&["ERP.example.com", "crm.example.com"], &k3);
    let tls = tls_config(
        vec![
            files.pair("nameless", &[&nameless], &k1),
            files.pair("first", &[&first], &k2),
            files.pair("second", &[&second], &k3),
        ],
        0,
    );
    let check = check(&tls, at("2030-01-01T00:00:00Z"));
    let path = |i: usize| tls.certificates[i].cert.display().to_string();
    assert!(check.errors.is_empty(), "{:?}", check.errors);
    assert_eq!(
        check.warnings,
        [
            format!(
                "{}: the default certificate has no DNS name in its subjectAltName: \
                 every client will reject it",
                path(0)
            ),
            format!(
                "{}: erp.example.com is also in {}, listed earlier, which is served for it",
                path(2),
                path(1)
            ),
        ]
    );
    // Not the default: never chosen at all.
    let tls = tls_config(tls.certificates.clone(), 1);
    let check = super::check(&tls, at("2030-01-01T00:00:00Z"));
    assert!(
        check.warnings[0].ends_with("no SNI name chooses it, it is never served"),
        "{:?}",
        check.warnings
    );
}
