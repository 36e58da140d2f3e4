//! The accept loop: `axum::serve` plus the connection limits hyper offers but axum does not
//! set. A request head (request line and headers) must arrive within the head timeout
//! (`server.request_timeout`) and fit in [`MAX_HEAD_BYTES`] (else 408 / 431 and the
//! connection is closed), so clients that trickle headers (slowloris) or send huge ones
//! cannot hold connections or memory.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// Largest request head (request line + headers) read; hyper answers 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Time open connections get to finish after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown` resolves. `peer` turns the listener's address into the
/// client address handlers see (`ConnectInfo`); a request head must arrive within
/// `head_timeout`.
pub async fn serve<L, F>(
    mut listener: L,
    app: Router,
    head_timeout: Duration,
    peer: fn(&L::Addr) -> SocketAddr,
    shutdown: F,
) where
    L: Listener,
    F: Future<Output = ()> + Send,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let connect_info = ConnectInfo(peer(&addr));
        let svc = app
            .clone()
            .map_request(move |req: axum::http::Request<Incoming>| {
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(connect_info);
                req
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// The TCP peer address.
pub fn tcp_peer(addr: &SocketAddr) -> SocketAddr {
    *addr
}

/// Unix-socket peers are local processes (the proxy): they get a loopback address so
/// handlers see one kind of peer.
pub fn unix_peer<A>(_: &A) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
