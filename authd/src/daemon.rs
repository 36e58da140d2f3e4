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
use crate::http::serve::{self, serve};
use crate::http::{AppState, router};
use crate::site::Site;
use crate::store::{AnyStore, Store};
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
    let store = AnyStore::open(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    match &store {
        // Tokens and session revocations written by halos-authctl apply within a second.
        AnyStore::Local(local) => local.follow_other_processes(),
        AnyStore::Redis(r) => {
            r.spawn_monitor();
            tracing::info!(
                "shared state in Redis: sessions, OIDC grants, bans and tokens are common to every instance using it"
            );
        }
    }
    let site = build_site(&config)?;
    let oidc = build_oidc(&config)?;
    if site.cookie_domains.is_empty() {
        tracing::warn!(
            "no cookie domain: configure session.cookies or a multi-label name in hostnames.conf"
        );
    }
    Ok(AppState {
        config: Arc::new(ArcSwap::from_pointee(config)),
        users,
        verifier,
        store,
        clock,
        site: Arc::new(ArcSwap::from_pointee(site)),
        templates: Arc::new(crate::http::portal::templates()),
        oidc: Arc::new(oidc),
        clients_status: Arc::default(),
        metrics: Arc::default(),
        session_keys: Arc::default(),
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

/// When the users file changes, users whose password changed, or who were disabled or
/// deleted, lose their sessions and OIDC tokens at once (whatever tool made the change);
/// disabled or deleted users also lose their API tokens and pending login codes (a
/// password change leaves those alone: they are not derived from the password).
fn spawn_user_change_revoker(state: &AppState) {
    let st = state.clone();
    let mut rx = st.users.subscribe();
    let mut before = st.users.snapshot();
    tokio::spawn(async move {
        // Users disabled or deleted while the daemon was stopped.
        revoke_orphan_api_tokens(&st, &before).await;
        while rx.changed().await.is_ok() {
            let after = st.users.snapshot();
            for old in before.iter() {
                // `Some(fingerprint)`: a new password (sessions bound to it stay, e.g. the
                // one that changed it from the portal); `None`: deleted or disabled.
                let (gone, keep, disabled_or_deleted) = match after.get(&old.name) {
                    None => (true, None, true),
                    Some(new) if new.disabled => (true, None, true),
                    Some(new) => (
                        new.password_text != old.password_text,
                        Some(crate::auth::password_fingerprint(&new.password_text)),
                        false,
                    ),
                };
                if gone && !old.disabled {
                    let sessions = match keep {
                        Some(fp) => st.store.delete_stale_sessions(&old.name, fp).await,
                        None => st.store.delete_user_sessions(&old.name).await,
                    }
                    .unwrap_or(0);
                    let tokens = st.store.revoke_user_tokens(&old.name).await.unwrap_or(0);
                    if after.get(&old.name).is_none() {
                        // A user made again under the same name must not inherit these.
                        forget_second_factors(&st, &old.name).await;
                    }
                    tracing::info!(target: "audit", event = "user_change", user = %old.name, sessions, tokens, "password changed, disabled or deleted: sessions and tokens ended");
                }
                if disabled_or_deleted {
                    let api_tokens = crate::api_token::revoke_user(&st.store, &old.name)
                        .await
                        .unwrap_or(0);
                    let codes = st
                        .store
                        .delete_user_login_codes(&old.name)
                        .await
                        .unwrap_or(0);
                    if api_tokens + codes > 0 {
                        tracing::info!(target: "audit", event = "user_change", user = %old.name, api_tokens, login_codes = codes, "disabled or deleted: API tokens and login codes revoked");
                    }
                }
            }
            before = after;
        }
    });
}

/// Revokes API tokens whose owner no longer exists or is disabled.
async fn revoke_orphan_api_tokens(st: &AppState, users: &crate::users::UsersDb) {
    let Ok(tokens) = st.store.api_tokens().await else {
        return;
    };
    let mut owners: Vec<&str> = tokens
        .iter()
        .map(|t| t.username.as_str())
        .filter(|u| users.active(u).is_none())
        .collect();
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let n = crate::api_token::revoke_user(&st.store, owner)
            .await
            .unwrap_or(0);
        tracing::info!(target: "audit", event = "user_change", user = %owner, api_tokens = n, "user disabled or deleted: API tokens revoked");
    }
}

/// Removes a deleted user's TOTP registration and passkeys.
async fn forget_second_factors(st: &AppState, username: &str) {
    let _ = st.store.delete_totp(username).await;
    for p in st.store.passkeys(username).await.unwrap_or_default() {
        let _ = st.store.delete_passkey(username, &p.credential_id).await;
    }
    tracing::info!(target: "audit", event = "user_change", user = %username, "deleted user: second factors removed");
}

/// Ends expired sessions every few minutes (the hot path already ignores them).
fn spawn_session_sweeper(state: &AppState) {
    let st = state.clone();
    tokio::spawn(async move {
        let secs = crate::http::request::MEMO_IDLE_SECS as u64 / 2;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
        loop {
            tick.tick().await;
            st.session_keys.forget_idle(st.clock.now());
        }
    });
    let st = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tick.tick().await;
            let now = st.clock.now();
            let cfg = st.config();
            match st
                .store
                .purge_sessions(now, |s| {
                    !crate::http::session::session_alive(&cfg.session, s, now)
                })
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(sessions = n, "expired sessions removed"),
                Err(e) => tracing::debug!(error = %e, "session sweep skipped"),
            }
        }
    });
}

/// Where the configuration came from, for SIGHUP (`None` for the demo).
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub optional: bool,
}

/// Runs the daemon until SIGTERM/SIGINT, offering the D-Bus API on `bus`.
pub async fn run(
    config: Config,
    source: Option<ConfigSource>,
    bus: crate::dbus::BusKind,
) -> anyhow::Result<()> {
    let state = build_state(config, Arc::new(SystemClock))?;
    let secret_dirs = crate::reload::reload_clients(&state);
    let _clients_watch = match crate::reload::watch_clients(&state, &secret_dirs) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the OIDC client directory; changes apply on SIGHUP");
            None
        }
    };
    crate::reload::spawn_retry(&state);
    spawn_user_change_revoker(&state);
    spawn_session_sweeper(&state);
    let _users_watch = if state.config().authentication_backend.file.watch {
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
    let (listener, bound) = bind(&state.config().server.address.listen).await?;
    // Read at start-up: listeners are not rebuilt on reload.
    let head_timeout = state.config().server.request_timeout.0;
    // Metrics on their own listener when telemetry.metrics.address is set.
    let metrics_cfg = state.config().telemetry.metrics.clone();
    if let (true, Some(addr)) = (metrics_cfg.enabled, &metrics_cfg.address) {
        let (l, b) = bind(&addr.listen).await?;
        let app = crate::http::metrics_router(state.clone(), &addr.path_prefix);
        eprintln!(
            "halos-authd metrics: listening on {b}{}",
            if addr.path_prefix.is_empty() {
                "/metrics"
            } else {
                &addr.path_prefix
            }
        );
        tokio::spawn(async move {
            let forever = std::future::pending::<()>();
            match l {
                Bound::Tcp(l) => serve(l, app, None, head_timeout, serve::tcp_peer, forever).await,
                Bound::Unix(l) => {
                    serve(l, app, None, head_timeout, serve::unix_peer, forever).await
                }
            }
        });
    }
    let prefix = state.config().path_prefix().to_string();
    let app = router(state.clone());
    let hot = serve::HotPath::new(state.clone());
    // Before the ready line, so whoever waits for it can use the bus API too.
    let _dbus = crate::dbus::serve(&state, bus).await;

    let mut hup = signal(SignalKind::hangup())?;
    let st = state.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            systemd::reloading();
            match st.users.reload() {
                Reload::Failed(e) => tracing::error!(
                    "reload: users file is invalid, keeping the last good copy: {e}"
                ),
                other => tracing::info!(outcome = ?other, "users reloaded on SIGHUP"),
            }
            let s = st.clone();
            let src = source.clone();
            let _ = tokio::task::spawn_blocking(move || match &src {
                Some(src) => match crate::reload::reload_config(&s, &src.path, src.optional) {
                    Ok(()) => tracing::info!("configuration reloaded on SIGHUP"),
                    Err(e) => tracing::error!(
                        "reload: the configuration is invalid, keeping the running one:\n{e}"
                    ),
                },
                None => {
                    crate::reload::reload_clients(&s);
                }
            })
            .await;
            systemd::ready();
        }
    });

    // Printed to stderr in a fixed form: tests and scripts wait for it.
    eprintln!("halos-authd ready: listening on {bound}{prefix}");
    tracing::info!(address = %bound, prefix = %prefix, users = state.users.snapshot().len(), "halos-authd ready");
    systemd::ready();
    systemd::spawn_watchdog();
    let released = crate::memory::release_startup_memory();
    tracing::debug!(
        bytes = released,
        "start-up code pages returned to the kernel"
    );
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        crate::memory::drop_cached_executable();
    });

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
        Bound::Tcp(l) => serve(l, app, Some(hot), head_timeout, serve::tcp_peer, shutdown).await,
        Bound::Unix(l) => serve(l, app, Some(hot), head_timeout, serve::unix_peer, shutdown).await,
    }
    Ok(())
}
