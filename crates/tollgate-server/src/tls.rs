//! HTTPS without a proxy in front: `serve --tls-cert FILE --tls-key FILE`.
//!
//! A TCP listener whose connections are handed to axum once their TLS handshake is
//! done. Handshakes run concurrently, each in its own task with a deadline, so a client
//! that opens a connection and says nothing holds up no other. rustls with the
//! aws-lc-rs provider, the same that reqwest uses for the SDK and the CLI.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most; beyond, connections wait in the kernel's backlog. A
/// flood of silent connections holds this many sockets for 10 s, not the process's
/// every file descriptor (the ledger's included).
const MAX_HANDSHAKES: usize = 1024;

/// A certificate chain and its private key, ready to serve, and the files they came
/// from: [`TlsConfig::reload`] reads them again (a renewed certificate) and new
/// connections use what it read; clones share it.
#[derive(Clone)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<ArcSwap<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (the server's certificate first, then its
    /// intermediates) and a PEM private key (PKCS#8, PKCS#1 or SEC1), and checks that
    /// the key is the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let config = Self::read(cert, key)?;
        Ok(Self { cert: cert.to_owned(), key: key.to_owned(), current: Arc::new(ArcSwap::from_pointee(config)) })
    }

    /// Reads the two files again; on success, connections from now on are served with
    /// what they hold, and on failure nothing changes (the error says why).
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = Self::read(&self.cert, &self.key)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    fn read(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| anyhow::anyhow!("cannot read the certificate chain {}: {e}", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!(
                "{} holds no certificate: --tls-cert takes a PEM file with a '-----BEGIN CERTIFICATE-----' block",
                cert.display()
            );
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            anyhow::anyhow!(
                "cannot read a private key from {}: {e}; --tls-key takes a PEM file with a '-----BEGIN PRIVATE KEY-----' (or RSA/EC) block",
                key.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("the TLS provider offers no protocol version")?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                anyhow::anyhow!(
                    "the key in {} does not serve the certificate in {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?;
        // axum serves HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Accepts TCP connections and yields them once their handshake completed; a failed or
/// late handshake is logged at debug level and dropped.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Must be called within a tokio runtime.
    pub fn new(tcp: TcpListener, tls: &TlsConfig) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let current = tls.current.clone();
        let (tx, ready) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let (stream, peer) = match tcp.accept().await {
                    Ok(conn) => conn,
                    // One connection's trouble (reset before it was taken): the next.
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        // Out of file descriptors or memory: wait rather than spin, as
                        // axum's own listener does.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (TlsAcceptor::from(current.load_full()), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, ready, accepting })
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it only does when aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
