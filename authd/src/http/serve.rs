//! The accept loop: `axum::serve` plus the connection limits hyper offers but axum does not
//! set, and a direct way in for forward auth.
//!
//! Forward auth is the hot path (every sub-request of every page behind the proxy), so its
//! three endpoints are answered here without the router: no route table, no request
//! extensions (`ConnectInfo`), no layers — the handler gets the peer address and the request's
//! headers as hyper parsed them. Everything else goes to the router as usual. A request head (request line and headers) must arrive within the head timeout
//! (`server.request_timeout`) and fit in [`MAX_HEAD_BYTES`] (else 408 / 431 and the
//! connection is closed), so clients that trickle headers (slowloris) or send huge ones
//! cannot hold connections or memory.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::Service;

use super::AppState;
use super::authz::{self, HotRoutes};

/// What the serving loop answers itself: the forward-auth endpoints, with the daemon's state.
pub struct HotPath {
    pub state: AppState,
    pub routes: HotRoutes,
}

impl HotPath {
    pub fn new(state: AppState) -> Arc<HotPath> {
        let routes = HotRoutes::new(state.config().path_prefix());
        Arc::new(HotPath { state, routes })
    }
}

/// One connection's service: forward auth directly, the rest through the router.
struct Connection {
    app: Router,
    hot: Option<Arc<HotPath>>,
    peer: SocketAddr,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> ResponseFuture {
        if let Some(hot) = &self.hot
            && let Some(flavor) = hot.routes.flavor(req.method(), req.uri().path())
        {
            let hot = Arc::clone(hot);
            let peer = self.peer;
            return Box::pin(async move {
                let (parts, _body) = req.into_parts();
                let mut resp = authz::respond(flavor, &hot.state, peer, &parts).await;
                // What the router's layer adds to every other answer (a 200 has no body).
                if resp.status() != StatusCode::OK {
                    resp.headers_mut()
                        .entry(header::X_CONTENT_TYPE_OPTIONS)
                        .or_insert(HeaderValue::from_static("nosniff"));
                }
                Ok(resp)
            });
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        // The router is always ready (axum documents it), so `call` needs no `poll_ready`.
        let mut app = self.app.clone();
        Box::pin(app.call(req))
    }
}

/// Largest request head (request line + headers) read; hyper answers 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Time open connections get to finish after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` (and `hot`, when given) until `shutdown` resolves. `peer` turns the listener's
/// address into the client address handlers see (`ConnectInfo`); a request head must arrive
/// within `head_timeout`.
pub async fn serve<L, F>(
    mut listener: L,
    app: Router,
    hot: Option<Arc<HotPath>>,
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
        let svc = Connection {
            app: app.clone(),
            hot: hot.clone(),
            peer: peer(&addr),
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
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
