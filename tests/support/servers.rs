//! In-process test servers on 127.0.0.1, port 0: a hyper HTTP/1.1 + HTTP/2 server behind rustls,
//! and raw servers for behaviour no well-behaved server shows (silence, a body cut short).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::pki::Leaf;

/// What the server does with each connection.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Answers `status` with `body` and a `Server` header, after waiting `delay`.
    Answer {
        status: u16,
        body: &'static str,
        server: &'static str,
        delay: Duration,
    },
    /// Completes the TLS handshake, reads the request, and never answers.
    Silent,
    /// Announces a 1000-byte body, sends 100 bytes, and closes.
    CloseMidBody,
    /// Reads the request and closes the connection without a byte of answer.
    CloseWithoutAnswer,
    /// HTTP/2 only: on the first request, starts a graceful shutdown (GOAWAY, NO_ERROR) and then
    /// answers that request in full, as nginx does with `keepalive_timeout 0`.
    GoAwayThenAnswer,
    /// Answers `status` with a fixed body, and records every request's path and query.
    Record {
        status: u16,
        seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    },
}

impl Behaviour {
    pub fn ok() -> Self {
        Self::Answer {
            status: 200,
            body: "hello from the test server",
            server: "test-server",
            delay: Duration::ZERO,
        }
    }
}

/// Which ALPN protocols the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    H2AndHttp11,
    Http11Only,
}

/// A running server; stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub(crate) task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listening port with nothing that will ever accept on it... closed: connecting is refused.
pub fn refused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A TLS acceptor presenting `leaf`, offering the ALPN protocols asked for.
pub fn tls_acceptor(leaf: &Leaf, alpn: Alpn) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(leaf.chain.clone(), leaf.key())
    .unwrap();
    config.alpn_protocols = match alpn {
        Alpn::H2AndHttp11 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Http11Only => vec![b"http/1.1".to_vec()],
    };
    TlsAcceptor::from(Arc::new(config))
}

/// Starts a TLS server with `leaf` that behaves as asked.
pub async fn tls_server(leaf: &Leaf, alpn: Alpn, behaviour: Behaviour) -> TestServer {
    let acceptor = tls_acceptor(leaf, alpn);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                serve(tls, behaviour).await;
            });
        }
    });
    TestServer { addr, task }
}

async fn serve<S>(mut stream: S, behaviour: Behaviour)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match behaviour {
        Behaviour::Answer {
            status,
            body,
            server,
            delay,
        } => {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(status)
                        .header("server", server)
                        .header("content-type", "text/plain")
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap(),
                )
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Behaviour::Record { status, seen } => {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let uri = req.uri();
                    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
                    seen.lock().unwrap().push(path.to_string());
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("server", "test-server")
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"recorded")))
                            .unwrap(),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Behaviour::Silent => {
            let mut buf = [0u8; 4096];
            // Read whatever comes and never answer; the test's deadline ends it.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        }
        Behaviour::GoAwayThenAnswer => {
            let Ok(mut conn) = h2::server::handshake(stream).await else {
                return;
            };
            let Some(Ok((_request, mut respond))) = conn.accept().await else {
                return;
            };
            conn.graceful_shutdown();
            let response = Response::builder()
                .status(200)
                .header("server", "test-server")
                .body(())
                .unwrap();
            if let Ok(mut body) = respond.send_response(response, false) {
                let _ = body.send_data(Bytes::from_static(b"answered after GOAWAY"), true);
            }
            // Keep driving the connection until the client has what it asked for.
            while let Some(Ok(_)) = conn.accept().await {}
        }
        Behaviour::CloseWithoutAnswer => {
            read_request_head(&mut stream).await;
            let _ = stream.shutdown().await;
        }
        Behaviour::CloseMidBody => {
            read_request_head(&mut stream).await;
            let head = "HTTP/1.1 200 OK\r\nServer: test-server\r\nContent-Length: 1000\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&[b'x'; 100]).await;
            let _ = stream.flush().await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads until the end of an HTTP/1.1 request head (bounded).
async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// A TCP server that accepts and then says nothing at all (no TLS ServerHello), or sends `reply`
/// and closes.
pub async fn raw_tcp_server(reply: Option<&'static [u8]>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            match reply {
                Some(bytes) => {
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    let _ = tcp.write_all(bytes).await;
                    let _ = tcp.shutdown().await;
                }
                // Keep the socket open and silent until the server is dropped.
                None => held.push(tcp),
            }
        }
    });
    TestServer { addr, task }
}

/// An address whose TCP handshakes time out, without touching any other host: a listener with a
/// backlog of 0 whose one queue slot is taken by a connection never accepted, so the kernel drops
/// every further SYN (FACTS.md).
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _filler: std::net::TcpStream,
}

pub async fn black_hole() -> BlackHole {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    let probe = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "the black hole accepted a second handshake");
    BlackHole {
        addr,
        _listener: listener,
        _filler: filler,
    }
}
