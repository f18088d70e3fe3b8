//! TLS with a verifier that records instead of refusing: the chain the server presented and the
//! verdict of standard WebPKI verification are kept as evidence, and the handshake goes on, so
//! the response behind an expired or self-signed certificate is still seen.
//!
//! One `ClientConfig` per request and no session resumption, so every TLS timing is a full
//! handshake and no state leaks between requests or routes.

pub mod cert;

use std::io;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::engine::cloudflare::ORIGIN_CA_ROOT_PEM;
use crate::observe::{
    io_error_kind, CertProblem, ErrorKind, ObservedError, Phase, Route, TlsFacts,
};

/// Why TLS could not be set up at all (a problem with our inputs, not with a site).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// A certificate given as an extra root was rejected as a trust anchor.
    #[error("CA file {path}: {reason}")]
    BadCaCertificate { path: String, reason: String },
    /// The certificate verifier could not be built from the roots.
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(String),
}

/// The trust roots of each route: public WebPKI roots everywhere, Cloudflare's Origin CA on the
/// origin route only (Full-strict trusts it, browsers do not), `--ca-file` roots on both.
/// Each route's verifier is built once with its roots (every handshake still verifies the
/// whole chain; only the setup is shared).
#[derive(Debug, Clone)]
pub struct TrustRoots {
    edge: Verifier,
    origin: Verifier,
}

/// The WebPKI verifier of one route's roots.
pub type Verifier = Arc<WebPkiServerVerifier>;

/// The crypto provider of every handshake, made once.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn verifier(roots: RootCertStore) -> Result<Verifier, TlsSetupError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsSetupError::Verifier(e.to_string()))
}

impl TrustRoots {
    pub fn new(extra: &[CertificateDer<'static>]) -> Result<Self, TlsSetupError> {
        let (edge, origin) = route_roots(extra)?;
        Ok(Self {
            edge: verifier(edge)?,
            origin: verifier(origin)?,
        })
    }

    /// The verifier of a route's roots, for `handshake`.
    pub fn verifier_for(&self, route: Route) -> Verifier {
        match route {
            Route::Edge => self.edge.clone(),
            Route::Origin => self.origin.clone(),
        }
    }
}

/// The roots of the edge route and of the origin route.
fn route_roots(
    extra: &[CertificateDer<'static>],
) -> Result<(RootCertStore, RootCertStore), TlsSetupError> {
    let mut edge = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra {
        edge.add(der.clone())
            .map_err(|e| TlsSetupError::BadCaCertificate {
                path: "--ca-file".into(),
                reason: e.to_string(),
            })?;
    }
    let mut origin = edge.clone();
    for der in crate::settings::pem_certificates(ORIGIN_CA_ROOT_PEM) {
        // The shipped root is known-good; a failure here would be a build defect.
        origin
            .add(der)
            .expect("shipped Cloudflare Origin CA root parses");
    }
    Ok((edge, origin))
}

/// What the verifier saw: the chain as presented and the WebPKI verdict.
#[derive(Debug)]
struct VerificationRecord {
    chain: Vec<CertificateDer<'static>>,
    verdict: Result<(), rustls::Error>,
}

/// A verifier that runs standard verification, records the outcome, and lets the handshake go on.
/// Handshake signatures are still checked: the server must hold the key of the certificate it
/// shows, whatever we think of the certificate.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    record: Mutex<Option<VerificationRecord>>,
}

impl RecordingVerifier {
    fn take_record(&self) -> Option<VerificationRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ());
        let chain = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.record.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(VerificationRecord { chain, verdict });
        Ok(ServerCertVerified::assertion())
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

/// The result of one TLS handshake: the stream when it completed, and whatever facts were seen
/// (a failed handshake may still have shown its certificate chain).
pub struct Handshake {
    pub stream: Result<TlsStream<TcpStream>, ObservedError>,
    pub facts: Option<TlsFacts>,
    /// When the handshake ended (finished, failed or timed out), taken before the certificates
    /// are parsed into facts: the TLS phase is the handshake's time, not our evidence work.
    pub ended_at: Instant,
}

/// Runs a TLS handshake over `tcp` with `host` as SNI and verification name, giving up at
/// `deadline`. A server that stalls after sending its certificate still leaves the chain behind.
pub async fn handshake(
    tcp: TcpStream,
    host: &str,
    verifier: Verifier,
    alpn: &[&[u8]],
    now: OffsetDateTime,
    deadline: Instant,
) -> Handshake {
    let verifier = Arc::new(RecordingVerifier {
        inner: verifier,
        record: Mutex::new(None),
    });
    let config = match ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => {
            let mut config = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            config.resumption = Resumption::disabled();
            config
        }
        Err(e) => return failed(ErrorKind::Io, e.to_string()),
    };
    let server_name = match ServerName::try_from(host.to_string()) {
        Ok(name) => name,
        Err(e) => {
            return failed(
                ErrorKind::Io,
                format!("invalid TLS server name {host}: {e}"),
            )
        }
    };
    let connecting = TlsConnector::from(Arc::new(config)).connect(server_name, tcp);
    let outcome = timeout_at(deadline, connecting).await;
    let ended_at = Instant::now();
    let result = match outcome {
        Ok(result) => result,
        Err(_) => {
            let record = verifier.take_record();
            return Handshake {
                ended_at,
                stream: Err(ObservedError {
                    phase: Phase::Tls,
                    kind: ErrorKind::Timeout,
                    message: "the TLS handshake did not finish before the deadline".into(),
                }),
                facts: record.map(|r| record_facts(Some(r), host, now)),
            };
        }
    };
    let record = verifier.take_record();
    match result {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            let mut facts = record_facts(record, host, now);
            facts.version = conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .map(|v| v.replace('_', "."));
            facts.cipher = conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .map(str::to_string);
            facts.alpn = conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned());
            Handshake {
                stream: Ok(stream),
                facts: Some(facts),
                ended_at,
            }
        }
        Err(e) => Handshake {
            stream: Err(ObservedError {
                phase: Phase::Tls,
                kind: tls_error_kind(&e),
                message: tls_error_message(&e),
            }),
            facts: record.map(|r| record_facts(Some(r), host, now)),
            ended_at,
        },
    }
}

fn failed(kind: ErrorKind, message: String) -> Handshake {
    Handshake {
        stream: Err(ObservedError {
            phase: Phase::Tls,
            kind,
            message,
        }),
        facts: None,
        ended_at: Instant::now(),
    }
}

fn record_facts(record: Option<VerificationRecord>, host: &str, now: OffsetDateTime) -> TlsFacts {
    let (chain, verdict) = match record {
        Some(r) => (r.chain, r.verdict),
        None => (Vec::new(), Err(rustls::Error::NoCertificatesPresented)),
    };
    let chain: Vec<_> = chain
        .iter()
        .filter_map(|der| cert::cert_facts(der, now))
        .collect();
    let name_matches = chain.first().map(|leaf| cert::covers_name(leaf, host));
    let (verified, verify_error, verify_message) = match verdict {
        Ok(()) => (true, None, None),
        Err(e) => (false, Some(cert_problem(&e)), Some(e.to_string())),
    };
    TlsFacts {
        version: None,
        cipher: None,
        alpn: None,
        verified,
        verify_error,
        verify_message,
        name_matches,
        chain,
    }
}

fn cert_problem(error: &rustls::Error) -> CertProblem {
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                CertProblem::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                CertProblem::NotYetValid
            }
            CertificateError::UnknownIssuer => CertProblem::Untrusted,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                CertProblem::NameMismatch
            }
            CertificateError::Revoked => CertProblem::Revoked,
            _ => CertProblem::Invalid,
        },
        _ => CertProblem::Invalid,
    }
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn tls_error_kind(e: &io::Error) -> ErrorKind {
    match rustls_error(e) {
        Some(rustls::Error::AlertReceived(_)) => ErrorKind::TlsAlert,
        Some(rustls::Error::InvalidCertificate(c)) => {
            match cert_problem(&rustls::Error::InvalidCertificate(c.clone())) {
                CertProblem::Expired => ErrorKind::CertExpired,
                CertProblem::NameMismatch => ErrorKind::CertNameMismatch,
                _ => ErrorKind::CertUntrusted,
            }
        }
        Some(_) => ErrorKind::Protocol,
        None => io_error_kind(e),
    }
}

fn tls_error_message(e: &io::Error) -> String {
    match rustls_error(e) {
        Some(inner) => format!("TLS handshake failed: {inner}"),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake".into()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::pem_certificates;

    #[test]
    fn the_origin_ca_is_trusted_on_the_origin_route_only() {
        let (edge, origin) = route_roots(&[]).unwrap();
        assert_eq!(origin.len(), edge.len() + 1);
        let cloudflare = pem_certificates(ORIGIN_CA_ROOT_PEM);
        let anchor = webpki_anchor_subject(&cloudflare[0]);
        assert!(origin
            .roots
            .iter()
            .any(|r| r.subject.as_ref() == anchor.as_slice()));
        assert!(!edge
            .roots
            .iter()
            .any(|r| r.subject.as_ref() == anchor.as_slice()));
    }

    #[test]
    fn extra_roots_are_trusted_on_both_routes() {
        let cloudflare = pem_certificates(ORIGIN_CA_ROOT_PEM);
        let (edge, _) = route_roots(&cloudflare).unwrap();
        let anchor = webpki_anchor_subject(&cloudflare[0]);
        assert!(edge
            .roots
            .iter()
            .any(|r| r.subject.as_ref() == anchor.as_slice()));
    }

    /// A real loopback handshake: the end of the TLS phase is taken inside the call, and the
    /// certificate facts, parsed after that moment, come back with it. (No timed assertion: the
    /// ordering is what the engine's `tls` timing relies on.)
    #[tokio::test]
    async fn the_handshake_end_is_taken_inside_the_call_and_facts_come_after() {
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::time::Duration;

        let certified = rcgen::generate_simple_self_signed(vec!["probe.test".into()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(drop)
        });

        let tcp = TcpStream::connect(address).await.unwrap();
        let called = Instant::now();
        let done = handshake(
            tcp,
            "probe.test",
            TrustRoots::new(&[]).unwrap().verifier_for(Route::Edge),
            &[b"http/1.1"],
            OffsetDateTime::now_utc(),
            called + Duration::from_secs(10),
        )
        .await;
        let returned = Instant::now();

        assert!(done.stream.is_ok(), "{:?}", done.stream.err());
        let facts = done.facts.expect("facts of a finished handshake");
        assert_eq!(facts.chain.len(), 1, "the presented certificate was parsed");
        assert!(!facts.verified, "self-signed, not among the public roots");
        assert!(called <= done.ended_at && done.ended_at <= returned);
        server.await.unwrap().unwrap();
    }

    fn webpki_anchor_subject(der: &CertificateDer<'_>) -> Vec<u8> {
        let mut store = RootCertStore::empty();
        store.add(der.clone()).unwrap();
        store.roots[0].subject.as_ref().to_vec()
    }
}
