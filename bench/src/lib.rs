//! Baseline servers for `bench/run.sh`: the same axum/hyper/tokio versions and release
//! profile as `halos-authd`, so the ratios the benchmark reports measure authd's own work.
//!
//! Both servers print `ready <address>` on stdout once listening (the benchmark waits
//! for it) and use the runtime authd uses: multi-threaded, one worker per CPU the process
//! may run on (`taskset` decides), or a current-thread runtime with `BENCH_THREADS=0`
//! (for callgrind).

use std::net::SocketAddr;

use axum::Router;

/// Serves `app` on the address given as the first argument (default `127.0.0.1:0`).
pub fn serve(app: Router) {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("usage: <server> [ADDRESS:PORT]");
    let threads: Option<usize> = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let rt = match threads {
        Some(0) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("cannot listen");
        println!("ready {}", listener.local_addr().expect("local address"));
        // A clean exit on SIGTERM, so callgrind writes its counts.
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(term)
            .await
            .expect("serve");
    });
}
