//! Telling why a first connection failed when the transport's own error does not say: a TLS
//! port reached with plaintext, or a server that closes the TLS connection because it wants a
//! client certificate. Runs once, only after `connect` has failed.

use crate::errors::TlsError;
use registry_api::Error;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the plaintext check may take per endpoint.
const CHECK_WAIT: Duration = Duration::from_secs(1);

/// A retryable connect failure explained, if it can be: an `http://` endpoint that answers
/// as a TLS server does gives [`TlsError::PlaintextToTls`]; a TLS connection closed right
/// after the handshake gives [`TlsError::ClosedDuringHandshake`]. Otherwise `err` as it is.
pub(crate) async fn explain(err: Error, endpoints: &[String], tls: bool) -> Error {
    if !err.is_retryable() {
        return err;
    }
    // Only a connection the server closed is worth a look: a refused or silent one (nothing
    // listens, a black hole, a timeout) is what `Unavailable` already says.
    // Lower case: the same reset reads "Connection reset by peer" from the OS and
    // "connection reset" from an error made of its kind alone.
    let text = chain_text(&err).to_lowercase();
    let Some(how) = CLOSED_BY_PEER
        .into_iter()
        .find(|needle| text.contains(needle))
    else {
        return err;
    };
    for endpoint in endpoints {
        if let Some(address) = endpoint.strip_prefix("http://") {
            if speaks_tls(address.trim_end_matches('/')).await {
                return Error::backend(TlsError::PlaintextToTls(endpoint.clone()));
            }
        }
    }
    // etcd refusing a client certificate closes the connection cleanly ("connection closed",
    // "broken pipe"); a reset is left to the network.
    if tls && how != "connection reset" {
        return Error::backend(TlsError::ClosedDuringHandshake(how.to_owned()));
    }
    err
}

/// How the transport words a connection the other side closed (in lower case).
const CLOSED_BY_PEER: [&str; 3] = ["connection closed", "broken pipe", "connection reset"];

fn chain_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push('\n');
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends a TLS ClientHello in plaintext and looks at the first bytes of the answer: a TLS
/// record (a handshake, or an alert refusing this bare hello) means the port speaks TLS.
async fn speaks_tls(address: &str) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(&CLIENT_HELLO).await.ok()?;
        let mut answer = [0u8; 2];
        stream.read_exact(&mut answer).await.ok()?;
        Some(matches!(answer, [0x15 | 0x16, 0x03]))
    };
    matches!(
        tokio::time::timeout(CHECK_WAIT, check).await,
        Ok(Some(true))
    )
}

/// The smallest TLS 1.2 ClientHello: two ECDHE AES-GCM suites, no extensions. A TLS server
/// answers it with a handshake or an alert record; a plaintext gRPC server with neither.
const CLIENT_HELLO: [u8; 52] = {
    let mut hello = [0u8; 52];
    let head = [
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ];
    let mut i = 0;
    while i < head.len() {
        hello[i] = head[i];
        i += 1;
    }
    // 32 bytes of random (zeros), then: no session id, 4 bytes of suites, null compression.
    let tail = [0x00, 0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f, 0x01, 0x00];
    let mut j = 0;
    while j < tail.len() {
        hello[11 + 32 + j] = tail[j];
        j += 1;
    }
    hello
};
