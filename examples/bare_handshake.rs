//! A bare TLS handshake loop with the same library, provider, ALPN and (absent) resumption as
//! `probe`, for `bench/compare-curl.py`: the floor under probe's `tls` phase.
//!
//! Usage: bare_handshake ADDR:PORT SERVER_NAME CA_FILE RUNS — prints each handshake in ms.

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, name, ca_file, runs] = args.as_slice() else {
        eprintln!("usage: bare_handshake ADDR:PORT SERVER_NAME CA_FILE RUNS");
        std::process::exit(2);
    };
    let mut roots = RootCertStore::empty();
    let pem = std::fs::File::open(ca_file).expect("the CA file opens");
    for der in rustls_pemfile::certs(&mut BufReader::new(pem)) {
        roots
            .add(der.expect("a PEM certificate"))
            .expect("a usable CA");
    }
    // As in probe: the provider and the root verifier are built once; each connection gets its
    // own configuration around them, and every handshake verifies the whole chain.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("a verifier");
    let make_config = || {
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.resumption = Resumption::disabled();
        Arc::new(config)
    };
    let server_name = ServerName::try_from(name.clone()).expect("a server name");
    for _ in 0..runs.parse::<u32>().expect("RUNS is a number") {
        let mut tcp = TcpStream::connect(address).expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        // As in probe: the clock runs from the connected socket to the finished handshake.
        let started = Instant::now();
        let mut conn = ClientConnection::new(make_config(), server_name.clone()).expect("a client");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("handshake");
        }
        println!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
    }
}
