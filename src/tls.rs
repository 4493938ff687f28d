//! TLS for the listeners: PEM chains and keys into a rustls [`ServerConfig`],
//! the choice of certificate by SNI name, and the certificate checks that
//! `odoo-edge check` prints.
//!
//! Certificates are picked by their subjectAltName DNS names only (the
//! subject's CN is ignored, as browsers do): an exact name first, then a
//! wildcard `*.example.com`, which covers exactly one more label. Of two
//! certificates that list the same name, the first listed is served.

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::config::{CertificateFiles, TlsConfig, UnknownSni};

/// TLS 1.2 sessions remembered for resumption by session ID (TLS 1.3 and
/// most TLS 1.2 clients resume with stateless tickets instead). An entry is
/// a few hundred bytes, so this costs about 1 MiB at most.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// A certificate chain or key file larger than this is not a PEM file anyone
/// meant (a chain of four RSA-4096 certificates is under 10 KiB).
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A certificate that expires sooner than this gets a warning: time for a
/// human to notice a renewal that did not happen.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Why a TLS listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate or key files that cannot be used: every one, in order.
    #[error("{}", FileErrors(.0))]
    Files(Vec<FileError>),
    #[error("no certificate given: at least one is needed")]
    NoCertificates,
    #[error("default certificate {default} does not exist: {count} certificate(s) given")]
    DefaultOutOfRange { default: usize, count: usize },
    /// The provider could not make what the config needs (a ticket key).
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

/// One certificate or key file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct FileError {
    /// Index of the pair in the certificates given.
    pub certificate: usize,
    /// Which file of the pair.
    pub part: Part,
    pub path: PathBuf,
    pub reason: FileProblem,
}

/// The certificate chain file or the key file of a [`CertificateFiles`] pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

impl Part {
    /// The key naming this file in the config, `cert` or `key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
        }
    }
}

/// What is wrong with one certificate or key file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error("{0} bytes: a PEM file may have at most 1 MiB")]
    TooLarge(u64),
    #[error("not valid PEM: {0}")]
    BadPem(#[source] pem::Error),
    #[error("no certificate in the file (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCertificate,
    #[error("certificate {number} in the file is not a valid X.509 certificate: {reason}")]
    BadCertificate { number: usize, reason: String },
    #[error(
        "no private key in the file (expected a PEM block labelled \"PRIVATE KEY\", \
         \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"
    )]
    NoKey,
    #[error(
        "the private key is encrypted, and the edge cannot ask for a passphrase: \
         store it decrypted (openssl pkey -in key.pem -out plain.pem), readable by the edge only"
    )]
    EncryptedKey,
    #[error("unsupported key type ({0}): use an RSA, ECDSA or Ed25519 key")]
    UnsupportedKey(#[source] rustls::Error),
    #[error("does not match the certificate in {}", .0.display())]
    KeyMismatch(PathBuf),
}

struct FileErrors<'a>(&'a [FileError]);

impl fmt::Display for FileErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Builds the rustls config of a TLS listener: loads every chain and key
/// (PKCS#8, PKCS#1 RSA or SEC1 EC keys), checks that each key matches its
/// certificate, and chooses among them by SNI name. Offers TLS 1.3 and 1.2
/// only, ALPN `h2` (when `http2`) and `http/1.1`, and session resumption
/// (a session-ID cache and stateless tickets). No 0-RTT: early data could be
/// replayed, and every Odoo RPC is a POST.
pub fn server_config(
    certs: &[CertificateFiles],
    default: usize,
    unknown_sni: UnknownSni,
    http2: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    if certs.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    if default >= certs.len() {
        return Err(TlsError::DefaultOutOfRange {
            default,
            count: certs.len(),
        });
    }
    // The process-default provider (aws-lc-rs unless the binary installs
    // another); explicit versions so that a newer rustls default cannot
    // widen them unnoticed.
    let builder = ServerConfig::builder_with_protocol_versions(&[&version::TLS13, &version::TLS12]);
    let provider = builder.crypto_provider().clone();
    let mut loaded = Vec::with_capacity(certs.len());
    let mut errors = Vec::new();
    for (i, files) in certs.iter().enumerate() {
        match load_pair(i, files, &provider) {
            Ok(pair) => loaded.push(pair),
            Err(mut failed) => errors.append(&mut failed),
        }
    }
    if !errors.is_empty() {
        return Err(TlsError::Files(errors));
    }
    let resolver = SniResolver::new(loaded, default, unknown_sni);
    let mut config = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    // Ticket keys are random per process and rotate every 6 hours.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Setup)?;
    Ok(Arc::new(config))
}

/// A loaded chain and key, with the names it is chosen for.
struct LoadedPair {
    key: Arc<CertifiedKey>,
    /// subjectAltName DNS names of the server certificate, lowercase.
    names: Vec<String>,
}

/// Loads one chain and its key; every problem with either file.
fn load_pair(
    index: usize,
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<LoadedPair, Vec<FileError>> {
    let error = |part: Part, reason: FileProblem| FileError {
        certificate: index,
        part,
        path: match part {
            Part::Cert => files.cert.clone(),
            Part::Key => files.key.clone(),
        },
        reason,
    };
    let chain = read_chain(&files.cert).and_then(|chain| {
        // `read_chain` returns at least one certificate.
        let names = parse_x509(&chain[0])
            .and_then(|cert| dns_names(&cert))
            .map_err(|reason| FileProblem::BadCertificate { number: 1, reason })?;
        Ok((chain, names))
    });
    let key = read_key(&files.key).and_then(|key| {
        provider
            .key_provider
            .load_private_key(key)
            .map_err(FileProblem::UnsupportedKey)
    });
    let ((chain, names), key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => {
            let mut errors = Vec::new();
            if let Err(reason) = chain {
                errors.push(error(Part::Cert, reason));
            }
            if let Err(reason) = key {
                errors.push(error(Part::Key, reason));
            }
            return Err(errors);
        }
    };
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        // A key type whose public half rustls cannot derive cannot be
        // compared; rustls' own `CertifiedKey::from_der` accepts it too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(vec![error(
                Part::Key,
                FileProblem::KeyMismatch(files.cert.clone()),
            )]);
        }
        Err(other) => {
            return Err(vec![error(
                Part::Cert,
                FileProblem::BadCertificate {
                    number: 1,
                    reason: other.to_string(),
                },
            )]);
        }
    }
    Ok(LoadedPair {
        key: Arc::new(certified),
        names,
    })
}

/// Reads a PEM file: a regular file of at most [`MAX_PEM_FILE`].
fn read_pem(path: &Path) -> Result<Vec<u8>, FileProblem> {
    // Checked before opening: opening a FIFO would block the load.
    let meta = std::fs::metadata(path).map_err(FileProblem::Unreadable)?;
    if !meta.is_file() {
        return Err(FileProblem::NotAFile);
    }
    if meta.len() > MAX_PEM_FILE {
        return Err(FileProblem::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes))
        .map_err(FileProblem::Unreadable)?;
    // It may have grown since `metadata`.
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(FileProblem::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file, in file order; at least one.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileProblem> {
    let pem = read_pem(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(FileProblem::BadPem)?;
    if chain.is_empty() {
        return Err(FileProblem::NoCertificate);
    }
    Ok(chain)
}

/// The first private key of a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileProblem> {
    let pem = read_pem(path)?;
    let encrypted = |marker: &[u8]| pem.windows(marker.len()).any(|w| w == marker);
    // OpenSSL's legacy encrypted form looks like a plain key with headers.
    if encrypted(b"Proc-Type: 4,ENCRYPTED") {
        return Err(FileProblem::EncryptedKey);
    }
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if encrypted(b"BEGIN ENCRYPTED PRIVATE KEY") => {
            Err(FileProblem::EncryptedKey)
        }
        Err(pem::Error::NoItemsFound) => Err(FileProblem::NoKey),
        Err(e) => Err(FileProblem::BadPem(e)),
    }
}

fn parse_x509<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| e.to_string())
}

/// The subjectAltName DNS names of a certificate, lowercase, in order.
fn dns_names(cert: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

// === impl SniResolver ===

/// Picks a listener's certificate from the client's SNI name.
#[derive(Debug)]
struct SniResolver {
    certificates: Vec<Arc<CertifiedKey>>,
    /// Exact names → index; the first certificate listing a name has it.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com` → index; first listed likewise.
    wildcard: HashMap<String, usize>,
    /// For names no certificate covers and clients without SNI; `None` refuses.
    fallback: Option<usize>,
}

impl SniResolver {
    fn new(pairs: Vec<LoadedPair>, default: usize, unknown_sni: UnknownSni) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut certificates = Vec::with_capacity(pairs.len());
        for (i, pair) in pairs.into_iter().enumerate() {
            for name in pair.names {
                match name.strip_prefix("*.") {
                    Some(parent) if !parent.contains('*') => {
                        wildcard.entry(parent.to_owned()).or_insert(i);
                    }
                    // A partial wildcard (`w*.example.com`) is not matched.
                    Some(_) => {}
                    None if name.contains('*') => {}
                    None => {
                        exact.entry(name).or_insert(i);
                    }
                }
            }
            certificates.push(pair.key);
        }
        SniResolver {
            certificates,
            exact,
            wildcard,
            fallback: match unknown_sni {
                UnknownSni::Default => Some(default),
                UnknownSni::Refuse => None,
            },
        }
    }

    /// Index of the certificate for this SNI name, if any is served.
    fn choose(&self, server_name: Option<&str>) -> Option<usize> {
        let Some(name) = server_name else {
            return self.fallback;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return Some(i);
        }
        // A wildcard covers one label: `a.example.com`, not `example.com`
        // nor `a.b.example.com` (the latter looks up `b.example.com`).
        if let Some((label, parent)) = name.split_once('.')
            && !label.is_empty()
            && let Some(&i) = self.wildcard.get(parent)
        {
            return Some(i);
        }
        self.fallback
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // `None` makes rustls end the handshake with a fatal alert.
        self.choose(client_hello.server_name())
            .map(|i| self.certificates[i].clone())
    }
}

// === check ===

/// What `odoo-edge check` finds in a TLS listener's certificates.
#[derive(Debug, Default)]
pub struct Check {
    /// Problems that make a certificate unusable, each naming its file.
    pub errors: Vec<String>,
    /// Remarks, each naming its file(s).
    pub warnings: Vec<String>,
    /// One per entry of `certificates`, in order.
    pub certificates: Vec<CertificateReport>,
}

/// One certificate chain file as `check` found it.
#[derive(Debug, Clone)]
pub struct CertificateReport {
    pub cert: PathBuf,
    /// subjectAltName DNS names of the server certificate, lowercase.
    pub names: Vec<String>,
    /// End of the server certificate's validity; `None` when it could not be read.
    pub not_after: Option<SystemTime>,
    /// Errors about this file alone, without its path (also in [`Check::errors`]).
    pub errors: Vec<String>,
}

impl fmt::Display for CertificateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.cert.display())?;
        if self.names.is_empty() {
            f.write_str("no DNS name")?;
        } else {
            f.write_str(&self.names.join(", "))?;
        }
        if let Some(not_after) = self.not_after {
            write!(f, "; valid until {}", date(not_after))?;
        }
        Ok(())
    }
}

/// Checks a TLS listener's certificate files as of `now`: chain order, the
/// validity period of every certificate in each chain, names covered twice
/// and certificates no name leads to. Keys were matched when loading.
pub fn check(tls: &TlsConfig, now: SystemTime) -> Check {
    check_certificates(&tls.certificates, tls.default_certificate, now)
}

/// [`check`] on certificate files that may not all load (so that config
/// validation can report an expired certificate beside a missing key).
pub fn check_certificates(certs: &[CertificateFiles], default: usize, now: SystemTime) -> Check {
    let mut out = Check::default();
    for (i, files) in certs.iter().enumerate() {
        let (report, warnings) = check_chain(&files.cert, now);
        let path = files.cert.display();
        out.errors
            .extend(report.errors.iter().map(|e| format!("{path}: {e}")));
        out.warnings
            .extend(warnings.iter().map(|w| format!("{path}: {w}")));
        if report.names.is_empty() && report.errors.is_empty() {
            out.warnings.push(if i == default {
                format!(
                    "{path}: the default certificate has no DNS name in its subjectAltName: \
                     every client will reject it"
                )
            } else {
                format!(
                    "{path}: no DNS name in its subjectAltName: no SNI name chooses it, \
                     it is never served"
                )
            });
        }
        out.certificates.push(report);
    }
    let mut first_with: HashMap<&str, &Path> = HashMap::new();
    for report in &out.certificates {
        for name in &report.names {
            match first_with.get(name.as_str()) {
                Some(first) if *first != report.cert => out.warnings.push(format!(
                    "{}: {name} is also in {}, listed earlier, which is served for it",
                    report.cert.display(),
                    first.display()
                )),
                Some(_) => {}
                None => {
                    first_with.insert(name, &report.cert);
                }
            }
        }
    }
    out
}

/// One chain file: its report (with errors) and its warnings, without the path.
fn check_chain(path: &Path, now: SystemTime) -> (CertificateReport, Vec<String>) {
    let mut report = CertificateReport {
        cert: path.to_owned(),
        names: Vec::new(),
        not_after: None,
        errors: Vec::new(),
    };
    let mut warnings = Vec::new();
    let ders = match read_chain(path) {
        Ok(ders) => ders,
        Err(e) => {
            report.errors.push(e.to_string());
            return (report, warnings);
        }
    };
    let mut chain = Vec::with_capacity(ders.len());
    for (n, der) in ders.iter().enumerate() {
        match parse_x509(der) {
            Ok(cert) => chain.push(cert),
            Err(reason) => {
                report.errors.push(
                    FileProblem::BadCertificate {
                        number: n + 1,
                        reason,
                    }
                    .to_string(),
                );
                return (report, warnings);
            }
        }
    }
    match dns_names(&chain[0]) {
        Ok(names) => report.names = names,
        Err(e) => report.errors.push(e),
    }
    report.not_after = Some(system_time(chain[0].validity().not_after));
    for (n, pair) in chain.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            report.errors.push(format!(
                "certificate {} in the file ({}) is not the issuer of certificate {} ({}): \
                 the file must hold the server certificate first, then each certificate's \
                 issuer in turn",
                n + 2,
                pair[1].subject(),
                n + 1,
                pair[0].subject()
            ));
        }
    }
    for (n, cert) in chain.iter().enumerate() {
        let not_before = system_time(cert.validity().not_before);
        let not_after = system_time(cert.validity().not_after);
        let which = if n == 0 {
            String::new()
        } else {
            format!("certificate {} in the file ({}) ", n + 1, cert.subject())
        };
        let finding = if now > not_after {
            Some(format!("{which}expired on {}", date(not_after)))
        } else if now < not_before {
            Some(format!("{which}is not valid before {}", date(not_before)))
        } else {
            None
        };
        match finding {
            // A server certificate outside its validity fails every client.
            Some(finding) if n == 0 => report.errors.push(finding),
            // An expired issuer may be a cross-signature that clients with a
            // newer root never use (as Let's Encrypt's DST Root CA X3 was).
            Some(finding) => warnings.push(format!(
                "{finding}: clients that need it to reach a root they trust will refuse the chain"
            )),
            None => {
                let left = not_after.duration_since(now).unwrap_or_default();
                if left < EXPIRY_WARNING {
                    let days = match left.as_secs() / 86400 {
                        0 => "under a day".to_owned(),
                        1 => "1 day".to_owned(),
                        d => format!("{d} days"),
                    };
                    warnings.push(format!(
                        "{which}expires in {days}, on {}: renew it",
                        date(not_after)
                    ));
                }
            }
        }
    }
    (report, warnings)
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `2027-01-31T12:00:00Z`; times before 1970 (never on a real certificate) as 1970.
fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t.max(UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests;
