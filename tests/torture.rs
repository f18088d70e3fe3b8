//! The torture suite: servers that are broken or hostile on purpose, each on a loopback port, and
//! `probe` against them with a 2 s deadline. Every case must end with a classified observation —
//! an error with its phase and kind, or a response with what was wrong with it recorded — within
//! the deadline: never a hang, a panic, or unbounded memory. Peak RSS of this binary is measured
//! in bench/torture-rss.sh and written down in the README.
//!
//! The servers here are raw scripts over TCP (and TLS): no well-behaved server library can be
//! made to trickle headers, lie about lengths or speak garbage, which is the point.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use probe::observe::{ErrorKind, Observation, Phase};
use probe::ProbeReport;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::pki::{Pki, SITE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(2);
/// What a case may take beyond the deadline (a loaded 2-core machine runs them all at once).
const SLACK: Duration = Duration::from_millis(1500);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Script = Arc<dyn Fn(Box<dyn Io>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn script<F, Fut>(f: F) -> Script
where
    F: Fn(Box<dyn Io>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |io| Box::pin(f(io)))
}

/// How a scripted server speaks to each connection.
enum Transport {
    /// The script gets the TCP stream itself.
    Tcp,
    /// A TLS handshake first (with these certificates and ALPN), then the script.
    Tls(Box<rustls::ServerConfig>),
}

/// A server running `script` on every connection; stopped when the test ends.
async fn scripted(transport: Transport, script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = match transport {
        Transport::Tcp => None,
        Transport::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(*config))),
    };
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, script) = (acceptor.clone(), script.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => script(Box::new(tcp)).await,
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            script(Box::new(tls)).await
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads until the end of a request head, or whatever comes within 200 ms (a TLS ClientHello).
async fn read_request(io: &mut Box<dyn Io>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        match tokio::time::timeout(Duration::from_millis(200), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
}

/// Keeps the connection open, reading and dropping whatever comes, until the peer goes.
async fn hold(mut io: Box<dyn Io>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// What a case must end with.
#[derive(Debug)]
enum Expect {
    /// An error in this phase, of this kind.
    Error(Phase, ErrorKind),
    /// An error in this phase, of one of these kinds.
    ErrorOneOf(Phase, &'static [ErrorKind]),
    /// A response for which this holds (what went wrong recorded in it).
    Response(&'static str, fn(&Observation) -> bool),
}

struct Case {
    name: &'static str,
    scheme: &'static str,
    addr: SocketAddr,
    expect: Expect,
}

async fn probe(scheme: &str, addr: SocketAddr, ca: &str) -> (ProbeReport, Duration) {
    let url = format!("{scheme}://{SITE}:{}/", addr.port());
    let cli = probe::Cli {
        target: url,
        origins: vec![],
        edge: Some(addr.to_string()),
        static_path: None,
        fpm_status: None,
        nginx_status: None,
        status_header: None,
        resolver: None,
        ca_files: vec![ca.into()],
        timeout: "2s".into(),
        samples: 1,
        expect_status: vec![],
        budget: vec![],
        follow_redirects: 0,
        redirect_hosts: vec![],
        cloudflare_edge: false,
        per_origin: None,
        json: true,
    };
    let settings = cli.settings().unwrap();
    let started = Instant::now();
    let report = probe::probe_site(&settings).await.unwrap();
    (report, started.elapsed())
}

fn check(case: &Case, report: &ProbeReport, took: Duration) -> Result<(), String> {
    if took > DEADLINE + SLACK {
        return Err(format!("took {took:?}"));
    }
    let o = report.observations.first().ok_or("no observation")?;
    let error = o.error.as_ref().map(|e| (e.phase, e.kind));
    let ok = match &case.expect {
        Expect::Error(phase, kind) => error == Some((*phase, *kind)),
        Expect::ErrorOneOf(phase, kinds) => {
            error.is_some_and(|(p, k)| p == *phase && kinds.contains(&k))
        }
        Expect::Response(_, holds) => o.response.is_some() && holds(o),
    };
    let wanted = match &case.expect {
        Expect::Response(what, _) => format!("a response: {what}"),
        other => format!("{other:?}"),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {wanted}, got error {:?} ({}), response {:?}",
            error,
            o.error.as_ref().map_or("", |e| e.message.as_str()),
            o.response.as_ref().map(|r| (
                r.status,
                r.body_bytes,
                r.body_complete,
                r.body_read_limit_hit
            ))
        ))
    }
}

// ---- HTTP/1.1 over plain TCP -------------------------------------------------------------------

fn reply_and_hold(reply: Vec<u8>) -> Script {
    let reply = Arc::new(reply);
    script(move |mut io| {
        let reply = reply.clone();
        async move {
            read_request(&mut io).await;
            let _ = io.write_all(&reply).await;
            hold(io).await;
        }
    })
}

async fn http1_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name, addr, expect| {
        cases.push(Case {
            name,
            scheme: "http",
            addr,
            expect,
        })
    };
    // Headers trickled one byte a second: cut at the deadline, in the headers phase.
    let slowloris = script(|mut io| async move {
        read_request(&mut io).await;
        for byte in b"HTTP/1.1 200 OK\r\nServer: slow\r\n".iter() {
            if io.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    add(
        "slowloris response headers",
        scripted(Transport::Tcp, slowloris).await,
        Expect::Error(Phase::Headers, ErrorKind::Timeout),
    );
    // A body that never ends: cut at the deadline in the body phase, what came is kept.
    let endless = script(|mut io| async move {
        read_request(&mut io).await;
        let _ = io
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        loop {
            if io.write_all(b"5\r\nhello\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    add(
        "a body that never ends",
        scripted(Transport::Tcp, endless).await,
        Expect::Error(Phase::Body, ErrorKind::Timeout),
    );
    // 100 MB announced and sent: reading stops at the limit, and says so.
    let huge = script(|mut io| async move {
        read_request(&mut io).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            100 * 1024 * 1024
        );
        let _ = io.write_all(head.as_bytes()).await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..1600 {
            if io.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    add(
        "a 100 MB body",
        scripted(Transport::Tcp, huge).await,
        Expect::Response("read stops at 8 MiB and says so", |o| {
            let r = o.response.as_ref().unwrap();
            r.body_read_limit_hit && !r.body_complete && r.body_excerpt.len() == 64 * 1024
        }),
    );
    let mut big_line = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    big_line.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    big_line.extend_from_slice(b"\r\n\r\n");
    add(
        "a 1 MB header line",
        scripted(Transport::Tcp, reply_and_hold(big_line)).await,
        Expect::Error(Phase::Headers, ErrorKind::Protocol),
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    add(
        "10,000 headers",
        scripted(Transport::Tcp, reply_and_hold(many)).await,
        Expect::Error(Phase::Headers, ErrorKind::Protocol),
    );
    add(
        "an invalid status line",
        scripted(
            Transport::Tcp,
            reply_and_hold(b"HTTP/1.1 OK fine\r\nContent-Length: 0\r\n\r\n".to_vec()),
        )
        .await,
        Expect::Error(Phase::Headers, ErrorKind::Protocol),
    );
    add(
        "an HTTP/0.9 reply (a bare body)",
        scripted(
            Transport::Tcp,
            reply_and_hold(b"<html><body>hello</body></html>\n".to_vec()),
        )
        .await,
        Expect::Error(Phase::Headers, ErrorKind::Protocol),
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    add(
        "binary garbage",
        scripted(Transport::Tcp, reply_and_hold(garbage)).await,
        Expect::Error(Phase::Headers, ErrorKind::Protocol),
    );
    // A reset (RST) in the middle of the body.
    let reset = script(|mut io| async move {
        read_request(&mut io).await;
        let _ = io
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nsome of it")
            .await;
        let _ = io.flush().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Dropped with SO_LINGER 0 below: the kernel sends RST instead of FIN.
    });
    let reset_addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let reset = reset.clone();
                tokio::spawn(async move {
                    // Linger 0 on a non-blocking socket does not block: it turns the close into
                    // an RST, which is the point.
                    #[allow(deprecated)]
                    tcp.set_linger(Some(Duration::ZERO)).unwrap();
                    reset(Box::new(tcp)).await;
                });
            }
        });
        addr
    };
    add(
        "a connection reset mid-body",
        reset_addr,
        Expect::Error(Phase::Body, ErrorKind::Reset),
    );
    cases
}

// ---- TLS ---------------------------------------------------------------------------------------

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    h2: bool,
) -> Box<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Box::new(config)
}

/// A chain of `n` intermediates under a root of its own, and a leaf for the site.
fn long_chain(n: usize) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca = |name: String| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    };
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca("torture root".into());
    let mut issuer = Issuer::new(root_params, root_key);
    let mut intermediates = Vec::new();
    for i in 0..n {
        let key = KeyPair::generate().unwrap();
        let params = ca(format!("torture intermediate {i}"));
        let cert = params.signed_by(&key, &issuer).unwrap();
        intermediates.push(cert.der().clone());
        issuer = Issuer::new(params, key);
    }
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![SITE.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut chain = vec![leaf.der().clone()];
    chain.extend(intermediates.into_iter().rev());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    (chain, key)
}

fn answer_ok() -> Script {
    script(|mut io| async move {
        read_request(&mut io).await;
        let _ = io
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        let _ = io.shutdown().await;
    })
}

async fn tls_cases(pki: &Pki) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name, addr, expect| {
        cases.push(Case {
            name,
            scheme: "https",
            addr,
            expect,
        })
    };
    add(
        "garbage instead of a ServerHello",
        scripted(
            Transport::Tcp,
            reply_and_hold(b"\x16\x03\x03\x00\x05garbage that is not a handshake".to_vec()),
        )
        .await,
        Expect::Error(Phase::Tls, ErrorKind::Protocol),
    );
    add(
        "a handshake_failure alert",
        scripted(
            Transport::Tcp,
            reply_and_hold(b"\x15\x03\x03\x00\x02\x02\x28".to_vec()),
        )
        .await,
        Expect::Error(Phase::Tls, ErrorKind::TlsAlert),
    );
    add(
        "a server that stalls mid-handshake",
        // The start of a ServerHello record, then nothing.
        scripted(
            Transport::Tcp,
            reply_and_hold(b"\x16\x03\x03\x00\x7a\x02\x00\x00".to_vec()),
        )
        .await,
        Expect::Error(Phase::Tls, ErrorKind::Timeout),
    );
    let (chain, key) = long_chain(50);
    add(
        "a chain of 50 intermediates",
        scripted(
            Transport::Tls(server_config(chain, key, false)),
            answer_ok(),
        )
        .await,
        Expect::Response("answered; the chain recorded and not verified", |o| {
            let tls = o.tls.as_ref().unwrap();
            !tls.verified && tls.chain.len() == 51
        }),
    );
    // A leaf whose signature bytes are damaged: still DER, no longer valid.
    let good = pki.good();
    let mut damaged = good.chain[0].to_vec();
    let at = damaged.len() - 10;
    damaged[at] ^= 0xff;
    add(
        "a malformed (damaged) certificate",
        scripted(
            Transport::Tls(server_config(
                vec![CertificateDer::from(damaged)],
                good.key(),
                false,
            )),
            answer_ok(),
        )
        .await,
        Expect::Response("answered; the certificate recorded as not valid", |o| {
            !o.tls.as_ref().unwrap().verified
        }),
    );
    // SNI ignored: the server presents another name's certificate whatever we ask for.
    let other = pki.leaf(&["other.test"], -1, 90, false);
    add(
        "SNI ignored (another name's certificate)",
        scripted(
            Transport::Tls(server_config(other.chain.clone(), other.key(), false)),
            answer_ok(),
        )
        .await,
        Expect::Response("answered; the name mismatch recorded", |o| {
            let tls = o.tls.as_ref().unwrap();
            !tls.verified && tls.name_matches == Some(false)
        }),
    );
    cases
}

// ---- HTTP/2 (TLS with ALPN h2, raw frames) ------------------------------------------------------

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const RST_STREAM: u8 = 0x3;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const CONTINUATION: u8 = 0x9;

/// An HPACK string length (7-bit prefix integer, no Huffman).
fn hpack_length(value: usize) -> Vec<u8> {
    if value < 127 {
        return vec![value as u8];
    }
    let mut out = vec![127];
    let mut rest = value - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// Sends `frames` after our SETTINGS (and an ACK of the client's), reading the client meanwhile.
fn h2_script(frames: Vec<Vec<u8>>, delay: Duration) -> Script {
    let frames = Arc::new(frames);
    script(move |io| {
        let frames = frames.clone();
        async move {
            let (mut read, mut write) = tokio::io::split(io);
            let reader = tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = read.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
            tokio::time::sleep(delay).await;
            for f in frames.iter() {
                if write.write_all(f).await.is_err() {
                    break;
                }
            }
            let _ = write.flush().await;
            let _ = reader.await;
        }
    })
}

async fn h2_cases(pki: &Pki) -> Vec<Case> {
    let good = pki.good();
    let tls = || Transport::Tls(server_config(good.chain.clone(), good.key(), true));
    let settings = frame(SETTINGS, 0, 0, &[]);
    let ack = frame(SETTINGS, 0x1, 0, &[]);
    let mut cases = Vec::new();
    let mut add = |name, addr, expect| {
        cases.push(Case {
            name,
            scheme: "https",
            addr,
            expect,
        })
    };
    let mut goaway = vec![0, 0, 0, 0];
    goaway.extend_from_slice(&1u32.to_be_bytes()); // PROTOCOL_ERROR
    add(
        "HTTP/2 GOAWAY at once",
        scripted(
            tls(),
            h2_script(
                vec![settings.clone(), frame(GOAWAY, 0, 0, &goaway)],
                Duration::ZERO,
            ),
        )
        .await,
        Expect::ErrorOneOf(Phase::Headers, &[ErrorKind::Protocol, ErrorKind::Closed]),
    );
    add(
        "HTTP/2 RST_STREAM on our request",
        scripted(
            tls(),
            h2_script(
                vec![
                    settings.clone(),
                    ack.clone(),
                    frame(RST_STREAM, 0, 1, &2u32.to_be_bytes()), // INTERNAL_ERROR
                ],
                Duration::from_millis(100),
            ),
        )
        .await,
        Expect::Error(Phase::Headers, ErrorKind::Reset),
    );
    // 10,000 settings in one frame: far past the 16 KiB frame size the client allows.
    let mut huge = Vec::new();
    for _ in 0..10_000 {
        huge.extend_from_slice(&[0, 3, 0, 0, 0, 100]); // MAX_CONCURRENT_STREAMS = 100
    }
    add(
        "a huge HTTP/2 SETTINGS frame",
        scripted(
            tls(),
            h2_script(vec![frame(SETTINGS, 0, 0, &huge)], Duration::ZERO),
        )
        .await,
        Expect::ErrorOneOf(Phase::Headers, &[ErrorKind::Protocol, ErrorKind::Closed]),
    );
    // Our send window never opened (initial window 0, no WINDOW_UPDATE): a GET carries no body,
    // so the answer still comes.
    let zero_window = frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    add(
        "an HTTP/2 window never opened",
        scripted(
            tls(),
            h2_script(
                vec![
                    zero_window,
                    ack.clone(),
                    frame(HEADERS, 0x4, 1, &[0x88]), // END_HEADERS, :status 200
                    frame(DATA, 0x1, 1, b"ok"),      // END_STREAM
                ],
                Duration::from_millis(100),
            ),
        )
        .await,
        Expect::Response("answered over HTTP/2", |o| {
            let r = o.response.as_ref().unwrap();
            r.status == 200 && r.http_version == "HTTP/2" && r.body_excerpt == "ok"
        }),
    );
    // 300 KB of response headers, over HEADERS and CONTINUATION frames: refused, not buffered.
    let mut block = vec![0x88, 0x00, 5];
    block.extend_from_slice(b"x-big");
    block.extend(hpack_length(300_000));
    block.extend(std::iter::repeat_n(b'a', 300_000));
    let mut frames = vec![settings.clone(), ack.clone()];
    let pieces: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == pieces.len() { 0x4 } else { 0 };
        frames.push(frame(kind, flags, 1, piece));
    }
    add(
        "300 KB of HTTP/2 response headers",
        scripted(tls(), h2_script(frames, Duration::from_millis(100))).await,
        Expect::ErrorOneOf(
            Phase::Headers,
            &[ErrorKind::Protocol, ErrorKind::Reset, ErrorKind::Closed],
        ),
    );
    // Headers promised, then silence on the stream.
    add(
        "HTTP/2 headers, then a body that never comes",
        scripted(
            tls(),
            h2_script(
                vec![settings, ack, frame(HEADERS, 0x4, 1, &[0x88])],
                Duration::from_millis(100),
            ),
        )
        .await,
        Expect::Error(Phase::Body, ErrorKind::Timeout),
    );
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_server_ends_in_a_classified_observation_within_the_deadline() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let ca = pki.ca_path.display().to_string();
    let mut cases = http1_cases().await;
    cases.extend(tls_cases(&pki).await);
    cases.extend(h2_cases(&pki).await);
    // All at once: a prober meets many broken servers at the same time.
    let runs = cases.iter().map(|case| {
        let ca = ca.clone();
        async move { probe(case.scheme, case.addr, &ca).await }
    });
    let results = futures_join_all(runs).await;
    let mut failures = Vec::new();
    for (case, (report, took)) in cases.iter().zip(results) {
        if let Err(why) = check(case, &report, took) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Memory stays bounded: a 100 MB body, a 1 MB header line and 300 KB of HTTP/2 headers
    // went by. The whole process (servers included) stays under the stated bound.
    let peak = peak_rss_mb();
    eprintln!("peak RSS after the suite: {peak:.1} MB");
    assert!(peak < PEAK_RSS_BOUND_MB, "peak RSS {peak:.1} MB");
}

/// The stated bound on the suite's peak RSS (measured: ~15 MB release, see README).
const PEAK_RSS_BOUND_MB: f64 = 64.0;

/// This process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs = Vec::new();
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(done.into_iter().map(Option::unwrap));
    outputs
}

// ---- DNS ---------------------------------------------------------------------------------------

/// The question of a DNS query.
struct Question {
    id: u16,
    /// Recursion desired.
    rd: bool,
    labels: Vec<String>,
    qtype: u16,
    /// The question section as sent, echoed in the answer.
    bytes: Vec<u8>,
}

fn question(query: &[u8]) -> Option<Question> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    let rd = query.get(2)? & 0x01 != 0;
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    Some(Question {
        id,
        rd,
        labels,
        qtype,
        bytes: query.get(12..at + 4)?.to_vec(),
    })
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// The answer the hostile DNS server gives; `None`: no answer at all.
fn dns_answer(query: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
    let Question {
        id,
        rd,
        labels,
        qtype,
        bytes: question,
    } = question(query)?;
    let first = labels.first().cloned().unwrap_or_default();
    let (mut rcode, mut truncated) = (0u8, false);
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let record = |kind: u16, rdata: &[u8]| {
        let mut r = vec![0xc0, 0x0c]; // the question's name
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    };
    match first.as_str() {
        "servfail" => rcode = 2,
        "allowed" if qtype == 1 => answers.push(record(1, &[127, 0, 0, 1])),
        "silent" => return None,
        "truncated" if qtype == 1 => {
            if over_tcp {
                answers.push(record(1, &[127, 0, 0, 1]));
            } else {
                truncated = true;
            }
        }
        "loop" if qtype == 1 => {
            // a CNAME b, and b CNAME a: a loop inside one answer.
            let name = labels.join(".");
            let other = name.replacen("loop", "loop2", 1);
            answers.push(record(5, &encode_name(&other)));
            let mut back = encode_name(&other);
            back.extend_from_slice(&5u16.to_be_bytes());
            back.extend_from_slice(&1u16.to_be_bytes());
            back.extend_from_slice(&60u32.to_be_bytes());
            let target = encode_name(&name);
            back.extend_from_slice(&(target.len() as u16).to_be_bytes());
            back.extend_from_slice(&target);
            answers.push(back);
        }
        "many" if qtype == 1 => {
            if over_tcp {
                for i in 1..=100u8 {
                    answers.push(record(1, &[127, 0, 0, i]));
                }
            } else {
                // 100 records do not fit a UDP answer: say so, as a server does.
                truncated = true;
            }
        }
        _ => {}
    }
    let mut out = id.to_be_bytes().to_vec();
    out.push(0x84 | if truncated { 0x02 } else { 0 } | u8::from(rd)); // QR, AA, TC, RD
    out.push(0x80 | rcode); // RA, rcode
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&question);
    for a in answers {
        out.extend_from_slice(&a);
    }
    Some(out)
}

/// A hostile DNS server on one loopback port, over UDP and TCP.
async fn hostile_dns() -> SocketAddr {
    // A free UDP port's number may be taken over TCP by another test: try a few ports.
    let mut bound = None;
    for _ in 0..50 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            bound = Some((udp, addr, tcp));
            break;
        }
    }
    let (udp, addr, tcp) = bound.expect("a loopback port free over both UDP and TCP");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            if let Some(answer) = dns_answer(&buf[..n], false) {
                let _ = udp.send_to(&answer, peer).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                    if stream.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Some(answer) = dns_answer(&query, true) else {
                        return;
                    };
                    let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&answer);
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn probe_name(name: &str, resolver: SocketAddr, port: u16) -> (ProbeReport, Duration) {
    let cli = probe::Cli {
        target: format!("http://{name}:{port}/"),
        origins: vec![],
        edge: None,
        static_path: None,
        fpm_status: None,
        nginx_status: None,
        status_header: None,
        resolver: Some(resolver.to_string()),
        ca_files: vec![],
        timeout: "2s".into(),
        samples: 1,
        expect_status: vec![],
        budget: vec![],
        follow_redirects: 0,
        redirect_hosts: vec![],
        cloudflare_edge: false,
        per_origin: None,
        json: true,
    };
    let settings = cli.settings().unwrap();
    let started = Instant::now();
    let report = probe::probe_site(&settings).await.unwrap();
    (report, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dns_answers_are_classified_within_the_deadline() {
    let resolver = hostile_dns().await;
    let closed = support::servers::refused_port().port();
    let a = |r: &ProbeReport| r.resolution.as_ref().unwrap().a.clone();
    let dns_error = |r: &ProbeReport| r.observations[0].error.as_ref().map(|e| (e.phase, e.kind));

    let (report, took) = probe_name("servfail.torture.test", resolver, closed).await;
    assert!(took < DEADLINE + SLACK, "{took:?}");
    assert_eq!(dns_error(&report), Some((Phase::Dns, ErrorKind::Servfail)));

    let (report, took) = probe_name("silent.torture.test", resolver, closed).await;
    assert!(took < DEADLINE + SLACK, "{took:?}");
    assert_eq!(dns_error(&report), Some((Phase::Dns, ErrorKind::Timeout)));

    // The truncated UDP answer is asked again over TCP, which has the address.
    let (report, took) = probe_name("truncated.torture.test", resolver, closed).await;
    assert!(took < DEADLINE + SLACK, "{took:?}");
    assert_eq!(
        a(&report).addresses,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        dns_error(&report),
        Some((Phase::Connect, ErrorKind::Refused))
    );

    // A CNAME loop ends as a DNS failure, not a hang.
    let (report, took) = probe_name("loop.torture.test", resolver, closed).await;
    assert!(took < DEADLINE + SLACK, "{took:?}");
    let (phase, _) = dns_error(&report).expect("an error");
    assert_eq!(phase, Phase::Dns, "{:?}", report.observations[0].error);

    // 100 addresses (over TCP after truncation): all recorded, two dialled.
    let (report, took) = probe_name("many.torture.test", resolver, closed).await;
    assert!(took < DEADLINE + SLACK, "{took:?}");
    assert_eq!(a(&report).addresses.len(), 100);
    let edge_dials = report
        .observations
        .iter()
        .filter(|o| o.route == probe::observe::Route::Edge)
        .count();
    assert_eq!(
        edge_dials,
        probe::engine::plan::MAX_EDGE_ADDRESSES_PER_FAMILY
    );
}

// ---- redirects ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_a_few_times_and_never_to_another_host() {
    // Every request is sent on to the next step of an endless chain; `/away` points elsewhere.
    let chain = script(|mut io| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match io.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let path = text.split(' ').nth(1).unwrap_or("/").to_string();
        let port = text
            .lines()
            .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
            .and_then(|h| h.rsplit_once(':'))
            .map_or("80", |(_, p)| p.trim())
            .to_string();
        let location = match path.as_str() {
            "/away" => "http://elsewhere.test/".to_string(),
            "/other" => format!("http://allowed.torture.test:{port}/landing"),
            _ => {
                let n: u32 = path.trim_start_matches("/step").parse().unwrap_or(0);
                format!("/step{}", n + 1)
            }
        };
        let reply = if path == "/landing" {
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nlanded".to_string()
        } else {
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        };
        let _ = io.write_all(reply.as_bytes()).await;
        let _ = io.shutdown().await;
    });
    let addr = scripted(Transport::Tcp, chain).await;
    let resolver = hostile_dns().await;
    let run_allowing = |path: &'static str, follow: u32, hosts: Vec<String>| async move {
        let cli = probe::Cli {
            target: format!("http://{SITE}:{}{path}", addr.port()),
            origins: vec![],
            edge: Some(addr.to_string()),
            static_path: None,
            fpm_status: None,
            nginx_status: None,
            status_header: None,
            resolver: None,
            ca_files: vec![],
            timeout: "2s".into(),
            samples: 1,
            expect_status: vec![],
            budget: vec![],
            follow_redirects: follow,
            redirect_hosts: hosts,
            cloudflare_edge: false,
            per_origin: None,
            json: true,
        };
        let mut settings = cli.settings().unwrap();
        settings.shared_mut().nameserver = probe::engine::resolve::Nameserver::At(resolver);
        probe::probe_site(&settings).await.unwrap()
    };
    let run = |path: &'static str, follow: u32| run_allowing(path, follow, vec![]);

    // Not following (the default): the redirect itself is the answer, healthy.
    let report = run("/", 0).await;
    let o = &report.observations[0];
    assert_eq!(o.response.as_ref().unwrap().status, 301);
    assert!(o.redirects.is_empty());
    assert_eq!(report.status, probe::Status::Ok);

    // Following 3 of an endless chain: three followed, still a redirect: a loop, said so.
    let report = run("/", 3).await;
    let o = &report.observations[0];
    let followed: Vec<String> = (1..=3)
        .map(|n| format!("http://{SITE}:{}/step{n}", addr.port()))
        .collect();
    assert_eq!(o.redirects, followed);
    assert_eq!(o.url, followed[2]);
    assert_eq!(report.status, probe::Status::Degraded);
    assert!(
        report
            .diagnosis
            .summary
            .contains("still a redirect after following 3"),
        "{}",
        report.diagnosis.summary
    );

    // A redirect to another host is never followed, only recorded.
    let report = run("/away", 3).await;
    let o = &report.observations[0];
    assert!(o.redirects.is_empty());
    assert_eq!(
        o.response.as_ref().unwrap().headers.location.as_deref(),
        Some("http://elsewhere.test/")
    );

    // Another host named in redirect_hosts is followed, resolved like an edge.
    let report = run("/other", 3).await;
    assert!(report.observations[0].redirects.is_empty(), "not allowed");
    let report = run_allowing("/other", 3, vec!["allowed.torture.test".into()]).await;
    let o = &report.observations[0];
    let landing = format!("http://allowed.torture.test:{}/landing", addr.port());
    assert_eq!(o.redirects, std::slice::from_ref(&landing));
    assert_eq!(o.url, landing);
    let r = o.response.as_ref().unwrap();
    assert_eq!((r.status, r.body_excerpt.as_str()), (200, "landed"));
    assert_eq!(report.status, probe::Status::Ok);
}

// ---- hostile status pages ----------------------------------------------------------------------

/// What a hostile origin does with a request for its status pages.
#[derive(Clone)]
enum StatusAnswer {
    /// This whole reply (status line, headers, body).
    Reply(Arc<Vec<u8>>),
    /// Headers, then a body that trickles a byte a second and never ends.
    Trickle,
    /// Nothing at all: the request waits until the deadline.
    Hang,
}

/// Reads a request head; its path (empty if none came).
async fn request_path(io: &mut Box<dyn Io>) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        match tokio::time::timeout(Duration::from_millis(500), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// An origin whose page answers at once and whose status pages answer as `status` says.
fn hostile_status_origin(status: StatusAnswer) -> Script {
    script(move |mut io| {
        let status = status.clone();
        async move {
            let path = request_path(&mut io).await;
            let page = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
            if !path.contains("status") {
                let _ = io.write_all(page).await;
                return;
            }
            match status {
                StatusAnswer::Reply(reply) => {
                    let _ = io.write_all(&reply).await;
                }
                StatusAnswer::Trickle => {
                    let _ = io
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{")
                        .await;
                    for _ in 0..10 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if io.write_all(b" ").await.is_err() {
                            return;
                        }
                    }
                }
                StatusAnswer::Hang => hold(io).await,
            }
        }
    })
}

fn status_reply(body: &[u8]) -> StatusAnswer {
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(body);
    StatusAnswer::Reply(Arc::new(reply))
}

/// A site probed on both routes, with (or without) both status pages.
async fn probe_with_status(addr: SocketAddr, read_status: bool) -> (ProbeReport, Duration) {
    let address = addr.to_string();
    let mut args = vec![
        format!("http://{SITE}:{}/", addr.port()),
        "--edge".into(),
        address.clone(),
        "--origin".into(),
        address,
        "--timeout".into(),
        "2s".into(),
    ];
    if read_status {
        args.extend(
            [
                "--fpm-status",
                "/fpm-status",
                "--nginx-status",
                "/nginx_status",
            ]
            .map(String::from),
        );
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let report = support::run_json(&args).await.0;
    (report, started.elapsed())
}

/// Status pages that are huge, endless, nested without end, out of range or silent: each is
/// recorded as a witness that could not be read (or did not answer), within the deadline, and
/// the verdict is the one the site gets without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_status_pages_never_change_the_verdict() {
    let fpm_like = |listen_queue: &str| {
        format!(
            r#"{{"pool":"www","process manager":"static","start time":1796596302,"start since":7000,"accepted conn":3,"listen queue":{listen_queue},"max listen queue":2,"listen queue len":4096,"idle processes":3,"active processes":0,"total processes":3,"max active processes":3,"max children reached":0,"slow requests":0,"processes":[{{"pid":1,"state":"Running\u001b[2J","start since":7000,"requests":1,"request duration":99,"request method":"GET","request uri":"/x\u001b]0;owned\u0007?token=secret","content length":0}}]}}"#
        )
    };
    let cases: Vec<(&str, StatusAnswer, &str)> = vec![
        (
            "2 MiB",
            status_reply(&vec![b' '; 2 * 1024 * 1024]),
            "larger than 1024 KiB",
        ),
        ("nested", status_reply(&b"[".repeat(200_000)), "not JSON"),
        (
            "out of range",
            status_reply(fpm_like("18446744073709551616").as_bytes()),
            "listen queue",
        ),
        ("trickle", StatusAnswer::Trickle, "the page was cut off"),
        ("silent", StatusAnswer::Hang, "no answer within"),
        (
            "escapes",
            status_reply(fpm_like("0").as_bytes()),
            "PHP-FPM pool www: 3 workers: 0 busy, 3 idle",
        ),
        (
            "cpu past any float",
            status_reply(
                fpm_like("0")
                    .replace(r#""content length":0"#, r#""content length":0,"last request cpu":1e307"#)
                    .as_bytes(),
            ),
            "PHP-FPM pool www: 3 workers: 0 busy, 3 idle",
        ),
        (
            "a worker older than time",
            status_reply(
                fpm_like("0")
                    .replace(r#""start since":7000,"requests""#, r#""start since":18446744073709551615,"requests""#)
                    .as_bytes(),
            ),
            "PHP-FPM pool www: 3 workers: 0 busy, 3 idle",
        ),
        (
            "a huge 403",
            StatusAnswer::Reply(Arc::new(
                [
                    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n".to_vec(),
                    vec![b'x'; 1024 * 1024],
                ]
                .concat(),
            )),
            "unavailable: 403",
        ),
    ];
    for (name, answer, line) in cases {
        let addr = scripted(Transport::Tcp, hostile_status_origin(answer)).await;
        let (plain, _) = probe_with_status(addr, false).await;
        let (report, took) = probe_with_status(addr, true).await;
        assert!(took < DEADLINE + SLACK, "{name}: took {took:?}");
        let (a, b) = (&plain.diagnosis, &report.diagnosis);
        assert_eq!(
            (a.status, a.cause, a.confidence),
            (b.status, b.cause, b.confidence),
            "{name}: {b:#?}"
        );
        assert!(
            b.evidence.iter().any(|l| l.contains(line)),
            "{name}: {:#?}",
            b.evidence
        );
        let text = probe::report::render_table(&report);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains("secret"),
            "{name}: {text}"
        );
        // What is stored reads back whole (no float JSON cannot hold), and keeps no query string.
        let json = probe::report::render_json(&report);
        assert!(!json.contains("secret"), "{name}: {json}");
        let back: ProbeReport =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, report, "{name}");
        let kept: usize = report
            .observations
            .iter()
            .filter_map(|o| o.response.as_ref())
            .map(|r| r.body_excerpt.len())
            .sum();
        assert!(kept < 4096, "{name}: {kept} bytes of status pages kept");
    }
}
