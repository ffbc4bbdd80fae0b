//! The connection loop under the router, in place of `axum::serve`, for limits axum's
//! loop does not set: how long a client may take to send a request's headers (hyper's
//! `header_read_timeout`, which needs a timer axum does not give it), how long a read or
//! write may stall (a body never finished, answers never read), and how many
//! connections are open at once. Without them a client that opens connections and
//! sends a byte now and then (slowloris) holds each one for ever, until the process
//! runs out of file descriptors, the ledger's included.
//!
//! Otherwise as `axum::serve`: HTTP/1.1 on any [`Listener`] (plain TCP, or
//! `tls::TlsListener`), and a graceful shutdown that stops accepting, lets the requests
//! in flight finish and then returns.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, mpsc, watch};

/// What the connection loop allows a client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long hyper waits for a request's headers, from the moment it starts
    /// reading them: also how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Connections open at once; beyond, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a request body may stop arriving, and a write to the client may wait
    /// without moving a byte: a client that stops sending a body, or stops reading the
    /// answers it asked for (its requests pipelined), is cut off instead of holding its
    /// slot for ever.
    pub stall_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 20 s: not a multiple of the SDK's 30 s cache or 15 s gate refresh, so a
        // client's next request rarely meets the close of its idle connection.
        Self {
            header_read_timeout: Duration::from_secs(20),
            max_connections: 10_000,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the requests in
/// flight (each connection finishes its current request and closes).
pub async fn serve<L: Listener>(
    mut listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: Limits,
) {
    // A body that stops arriving for the stall timeout fails its request.
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.stall_timeout));
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropped to tell every connection to finish; each holds a `done` sender, so the
    // receiver ends once the last one has.
    let (closing_tx, closing_rx) = watch::channel(());
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, _) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let (mut closing, done) = (closing_rx.clone(), done_tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _done = done;
            let mut builder = Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            // Writes only: hyper keeps a read pending while a handler runs (to notice a
            // client hanging up), so a read timeout would cut a slow request off.
            // Request bodies have their own timeout (`RequestBodyTimeoutLayer`, below).
            let mut io = tokio_io_timeout::TimeoutStream::new(io);
            io.set_write_timeout(Some(limits.stall_timeout));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(Box::pin(io)), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(closing_rx);
    drop(closing_tx);
    drop(done_tx);
    let _ = done_rx.recv().await;
}
