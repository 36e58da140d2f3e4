//! Start-up, serving, signals and shutdown of `halos-authd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use arc_swap::ArcSwap;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ListenAddress};
use crate::hostnames::{Hostnames, SystemNames};
use crate::http::{AppState, router};
use crate::site::Site;
use crate::store::{AnyStore, LocalStore};
use crate::systemd;
use crate::users::store::{Reload, UsersStore};
use crate::users::verifier::PasswordVerifier;

/// Where the daemon ended up listening (port 0 resolves to a real port).
#[derive(Debug, Clone)]
pub enum BoundAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for BoundAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundAddress::Tcp(a) => write!(f, "tcp://{a}"),
            BoundAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

async fn bind(addr: &ListenAddress) -> anyhow::Result<(Bound, BoundAddress)> {
    match addr {
        ListenAddress::Tcp(a) => {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?;
            let local = l.local_addr()?;
            Ok((Bound::Tcp(l), BoundAddress::Tcp(local)))
        }
        ListenAddress::Unix(p) => {
            // A stale socket from a previous run would make bind fail.
            if std::fs::symlink_metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(p);
            }
            let l = UnixListener::bind(p)
                .with_context(|| format!("cannot listen on {}", p.display()))?;
            Ok((Bound::Unix(l), BoundAddress::Unix(p.clone())))
        }
    }
}

/// Derives the site (cookie domains, rules) from the configuration and hostnames.conf.
pub fn build_site(config: &Config) -> anyhow::Result<Site> {
    let hostnames = Hostnames::load(&config.hostnames_file.0, &SystemNames::from_system());
    if let Some(notice) = hostnames.notice() {
        tracing::warn!(file = %config.hostnames_file.0.display(), "{notice}");
    }
    Site::build(config, &hostnames).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Builds the shared state from a validated configuration.
pub fn build_state(config: Config, clock: SharedClock) -> anyhow::Result<AppState> {
    let users = UsersStore::open(&config.authentication_backend.file.path)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pw = &config.authentication_backend.file.password;
    let verifier = PasswordVerifier::start(pw.max_concurrent, pw.max_queued, &pw.argon2);
    let store = AnyStore::Local(Arc::new(
        LocalStore::open(&config.storage.local.path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.storage.local.path.display()))?,
    ));
    let site = build_site(&config)?;
    let oidc = build_oidc(&config)?;
    if site.cookie_domains.is_empty() {
        tracing::warn!(
            "no cookie domain: configure session.cookies or a multi-label name in hostnames.conf"
        );
    }
    Ok(AppState {
        config: Arc::new(config),
        users,
        verifier,
        store,
        clock,
        site: Arc::new(ArcSwap::from_pointee(site)),
        templates: Arc::new(crate::http::portal::templates()),
        oidc: Arc::new(oidc),
    })
}

/// The issuer (`identity_providers.oidc.issuer`, else `https://${HALOS_DOMAIN}/sso`),
/// signing keys (generated on first start) and the clients of authd.yml.
pub fn build_oidc(config: &Config) -> anyhow::Result<crate::http::oidc::Oidc> {
    use crate::oidc::{ClientRegistry, Issuer, SigningKeys};
    let issuer = match &config.identity_providers.oidc.issuer {
        Some(u) => Issuer::new(u),
        None => {
            let hostnames = Hostnames::load(&config.hostnames_file.0, &SystemNames::from_system());
            let domain = hostnames.resolve_halos_domain();
            Issuer::parse(&format!("https://{domain}{}", config.path_prefix()))
        }
    }
    .map_err(|e| anyhow::anyhow!("identity_providers.oidc.issuer: {e}"))?;
    let keys_dir = config.storage.local.keys_dir();
    let keys = SigningKeys::load_or_generate(&keys_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", keys_dir.display()))?;
    let registry = ClientRegistry::build(
        config
            .identity_providers
            .oidc
            .clients
            .iter()
            .map(|c| ("authd.yml".to_string(), c.clone())),
        crate::oidc::clients::read_secret_file,
    );
    for e in registry.errors() {
        tracing::error!("OIDC client skipped: {e}");
    }
    tracing::info!(
        issuer = issuer.as_str(),
        clients = registry.clients().len(),
        "OpenID Connect provider ready"
    );
    Ok(crate::http::oidc::Oidc {
        issuer,
        keys,
        registry: arc_swap::ArcSwap::from_pointee(registry),
    })
}

/// Ends expired sessions every few minutes (the hot path already ignores them).
fn spawn_session_sweeper(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tick.tick().await;
            let now = st.clock.now();
            let AnyStore::Local(local) = &st.store;
            let n = local.purge(|s| !crate::http::session::session_alive(&st, s, now));
            if n > 0 {
                tracing::debug!(sessions = n, "expired sessions removed");
            }
        }
    });
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let state = build_state(config, Arc::new(SystemClock))?;
    spawn_session_sweeper(&state);
    let _users_watch = if state.config.authentication_backend.file.watch {
        match state.users.watch() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the users file; changes apply on SIGHUP");
                None
            }
        }
    } else {
        None
    };
    let (listener, bound) = bind(&state.config.server.address.listen).await?;
    let prefix = state.config.path_prefix().to_string();
    let app = router(state.clone());

    let mut hup = signal(SignalKind::hangup())?;
    let users = state.users.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            systemd::reloading();
            match users.reload() {
                Reload::Failed(e) => tracing::error!(
                    "reload: users file is invalid, keeping the last good copy: {e}"
                ),
                other => tracing::info!(outcome = ?other, "reloaded on SIGHUP"),
            }
            systemd::ready();
        }
    });

    // Printed to stderr in a fixed form: tests and scripts wait for it.
    eprintln!("halos-authd ready: listening on {bound}{prefix}");
    tracing::info!(address = %bound, prefix = %prefix, users = state.users.snapshot().len(), "halos-authd ready");
    systemd::ready();
    systemd::spawn_watchdog();

    let shutdown = async {
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        systemd::stopping();
        tracing::info!("shutting down");
    };
    match listener {
        Bound::Tcp(l) => {
            axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(shutdown)
                .await?
        }
        Bound::Unix(l) => {
            axum::serve(l, app.into_make_service())
                .with_graceful_shutdown(shutdown)
                .await?
        }
    }
    Ok(())
}
