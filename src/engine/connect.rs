//! TCP connect to one chosen address, and the mapping of socket errors to evidence kinds.
//! No retries and no happy-eyeballs: each address is its own observation.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::observe::{io_error_kind, ErrorKind, ObservedError, Phase};

/// Opens a TCP connection to `address`, giving up at `deadline`.
pub async fn connect(address: SocketAddr, deadline: Instant) -> Result<TcpStream, ObservedError> {
    match timeout_at(deadline, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            // Requests are tiny; do not let Nagle hold the request back behind the TLS records.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(ObservedError {
            phase: Phase::Connect,
            kind: io_error_kind(&e),
            message: format!("connect to {address} failed: {e}"),
        }),
        Err(_) => Err(ObservedError {
            phase: Phase::Connect,
            kind: ErrorKind::Timeout,
            message: format!("no answer to the TCP handshake with {address} before the deadline"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(address, Instant::now() + Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(err.phase, Phase::Connect);
        assert_eq!(err.kind, ErrorKind::Refused);
    }
}
