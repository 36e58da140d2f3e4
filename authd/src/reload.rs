//! Live reloads without a restart and without touching sessions or tokens:
//! OIDC clients (authd.yml + the snippet directory + the secret files they name), and
//! the whole configuration on SIGHUP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigErrors, OidcClientConfig};
use crate::hostnames::{Hostnames, SystemNames};
use crate::http::AppState;
use crate::oidc::ClientRegistry;
use crate::oidc::snippets::{self, SnippetProblem};

/// What the last client reload found; kept for `halos-authctl`-style reporting.
#[derive(Debug, Default)]
pub struct ClientsStatus {
    /// Secret files named by the clients; the watcher reacts to them.
    pub secret_files: BTreeSet<PathBuf>,
    /// Last good version of each snippet file (kept in force while a new version is broken).
    pub last_good: BTreeMap<PathBuf, OidcClientConfig>,
    pub problems: Vec<String>,
}

/// Everything the daemon (and `halos-authctl clients list`) would load.
pub struct LoadedClients {
    pub registry: ClientRegistry,
    pub snippet_problems: Vec<SnippetProblem>,
    pub last_good: BTreeMap<PathBuf, OidcClientConfig>,
    pub secret_dirs: Vec<PathBuf>,
    /// The secret files the clients name (their changes trigger a reload).
    pub secret_files: Vec<PathBuf>,
}

/// Builds the client registry: authd.yml's clients first, then the snippets by file name.
pub fn load_clients(
    config: &Config,
    previous: &BTreeMap<PathBuf, OidcClientConfig>,
) -> LoadedClients {
    let hostnames = Hostnames::load(&config.hostnames_file.0, &SystemNames::from_system());
    let oidc = &config.identity_providers.oidc;
    let snippets = snippets::load_dir(&oidc.clients_dir, &hostnames, previous);
    let mut entries: Vec<(String, OidcClientConfig)> = oidc
        .clients
        .iter()
        .map(|c| ("authd.yml".to_string(), snippets::expand(c, &hostnames)))
        .collect();
    entries.extend(snippets.clients.iter().cloned());
    let secret_dirs = snippets::secret_dirs(&entries);
    let secret_files = entries
        .iter()
        .filter_map(|(_, c)| c.client_secret_file.clone())
        .collect();
    let registry = ClientRegistry::build(entries, snippets::read_secret_file);
    LoadedClients {
        registry,
        snippet_problems: snippets.problems,
        last_good: snippets.last_good,
        secret_dirs,
        secret_files,
    }
}

/// Rebuilds the registry and swaps it in. Returns the secret-file directories to watch.
pub fn reload_clients(st: &AppState) -> Vec<PathBuf> {
    let config = st.config();
    let previous = st
        .clients_status
        .lock()
        .map(|s| s.last_good.clone())
        .unwrap_or_default();
    let loaded = load_clients(&config, &previous);
    let mut problems: Vec<String> = loaded
        .snippet_problems
        .iter()
        .map(ToString::to_string)
        .collect();
    problems.extend(loaded.registry.errors().iter().map(ToString::to_string));
    for p in &problems {
        tracing::error!(target: "reload", "OIDC client skipped: {p}");
    }
    let n = loaded.registry.clients().len();
    st.oidc.registry.store(Arc::new(loaded.registry));
    tracing::info!(target: "reload", clients = n, problems = problems.len(), "OIDC clients loaded");
    if let Ok(mut s) = st.clients_status.lock() {
        s.last_good = loaded.last_good;
        s.problems = problems;
        s.secret_files = loaded.secret_files.into_iter().collect();
    }
    loaded.secret_dirs
}

/// Re-reads authd.yml (strictly). A bad file keeps the running configuration.
pub fn reload_config(st: &AppState, path: &Path, optional: bool) -> Result<(), ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let new = Config::load(path, optional, &env).inspect_err(|_| st.metrics.reload(false))?;
    let old = st.config();
    if new.server.address != old.server.address || new.storage.local.path != old.storage.local.path
    {
        tracing::warn!("server.address and storage changes apply at the next restart");
    }
    match crate::daemon::build_site(&new) {
        Ok(site) => st.site.store(Arc::new(site)),
        Err(e) => {
            return Err(ConfigErrors(vec![crate::config::ConfigError {
                source: path.display().to_string(),
                line: None,
                column: None,
                key_path: String::new(),
                reason: e.to_string(),
            }]));
        }
    }
    st.store.set_session_config(&new.session);
    st.config.store(Arc::new(new));
    reload_clients(st);
    st.metrics.reload(true);
    Ok(())
}

/// Retries skipped clients now and then: a secret file may appear in a directory that
/// did not exist when we tried to watch it.
pub fn spawn_retry(st: &AppState) {
    let st = st.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            let pending = st
                .clients_status
                .lock()
                .map(|s| !s.problems.is_empty())
                .unwrap_or(false);
            if pending {
                let s = st.clone();
                let _ = tokio::task::spawn_blocking(move || reload_clients(&s)).await;
            }
        }
    });
}

/// Watches the snippet directory and the secret files' directories; reloads within a
/// second of a change (debounced), until the returned watcher is dropped.
pub fn watch_clients(
    st: &AppState,
    first_secret_dirs: &[PathBuf],
) -> notify::Result<Arc<Mutex<RecommendedWatcher>>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let clients_dir = st.config().identity_providers.oidc.clients_dir.clone();
    let status = Arc::clone(&st.clients_status);
    // Only snippet files and the named secret files count: the secret files may sit in
    // a busy directory (the state database's, say) whose other changes must not matter.
    let interesting = move |p: &Path| {
        (p.parent() == Some(clients_dir.as_path()) && snippets::is_snippet(p))
            || status.lock().is_ok_and(|s| s.secret_files.contains(p))
    };
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match res {
            Ok(ev) => {
                !matches!(ev.kind, EventKind::Access(_))
                    && (ev.need_rescan() || ev.paths.iter().any(|p| interesting(p)))
            }
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })?;
    let watcher = Arc::new(Mutex::new(watcher));
    let clients_dir = st.config().identity_providers.oidc.clients_dir.clone();
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let add = |w: &Arc<Mutex<RecommendedWatcher>>, dir: &Path, watched: &mut BTreeSet<PathBuf>| {
        if watched.contains(dir) {
            return;
        }
        if let Ok(mut w) = w.lock() {
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.to_path_buf());
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch (yet)"),
            }
        }
    };
    add(&watcher, &clients_dir, &mut watched);
    for d in first_secret_dirs {
        add(&watcher, d, &mut watched);
    }
    let st = st.clone();
    let w = Arc::clone(&watcher);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait for 150 ms of quiet.
            while let Ok(Some(())) =
                tokio::time::timeout(Duration::from_millis(150), rx.recv()).await
            {}
            let s = st.clone();
            let dirs = match tokio::task::spawn_blocking(move || reload_clients(&s)).await {
                Ok(d) => d,
                Err(_) => continue,
            };
            // Secret files named by new snippets: watch their directories too.
            let cd = st.config().identity_providers.oidc.clients_dir.clone();
            add(&w, &cd, &mut watched);
            for d in dirs {
                add(&w, &d, &mut watched);
            }
        }
    });
    Ok(watcher)
}
