//! The live users database: an atomically swapped snapshot, reloaded when the file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::UsersDb;
use crate::watch::{DirWatch, parent_dir, watch_dir};
use crate::yaml::YamlError;

/// Outcome of one reload attempt.
#[derive(Debug)]
pub enum Reload {
    Changed,
    Unchanged,
    /// Empty or missing file (mid-write or being replaced): the last good copy stays.
    NoContent,
    Failed(YamlError),
}

#[derive(Clone)]
pub struct UsersStore {
    path: PathBuf,
    current: Arc<ArcSwap<UsersDb>>,
    /// Bumped on every successful change; other parts (sessions) subscribe.
    generation: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for UsersStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UsersStore({})", self.path.display())
    }
}

impl UsersStore {
    /// Loads the file. A missing file is an empty database (first boot, before
    /// provisioning); a broken one is an error at start-up.
    pub fn open(path: &Path) -> Result<Self, YamlError> {
        let db = match super::read_users_file(path) {
            Ok(t) => UsersDb::parse(&t, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %path.display(), "users file does not exist yet; no one can log in");
                UsersDb::default()
            }
            Err(e) => {
                return Err(YamlError {
                    source: path.display().to_string(),
                    line: None,
                    column: None,
                    key_path: String::new(),
                    reason: format!("cannot read: {e}"),
                });
            }
        };
        let (generation, _) = watch::channel(0);
        Ok(Self {
            path: path.to_path_buf(),
            current: Arc::new(ArcSwap::from_pointee(db)),
            generation: Arc::new(generation),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current snapshot (cheap: an `Arc` clone).
    pub fn snapshot(&self) -> Arc<UsersDb> {
        self.current.load_full()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Installs `db` (e.g. after our own write) without re-reading.
    pub fn install(&self, db: UsersDb) {
        self.current.store(Arc::new(db));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Re-reads the file; keeps the last good copy on any problem.
    pub fn reload(&self) -> Reload {
        let text = match super::read_users_file(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Reload::NoContent,
            Err(e) => {
                return Reload::Failed(YamlError {
                    source: self.path.display().to_string(),
                    line: None,
                    column: None,
                    key_path: String::new(),
                    reason: format!("cannot read: {e}"),
                });
            }
        };
        // Truncate-then-write editors leave a moment of empty file; wait for the content.
        if text.trim().is_empty() {
            return Reload::NoContent;
        }
        match UsersDb::parse(&text, &self.path.display().to_string()) {
            Ok(db) if db.content_hash == self.current.load().content_hash => Reload::Unchanged,
            Ok(db) => {
                self.install(db);
                Reload::Changed
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Watches the file's directory and reloads on change until the returned guard drops.
    pub fn watch(&self) -> notify::Result<DirWatch> {
        let name = self.path.file_name().map(|n| n.to_os_string());
        let (guard, mut rx) = watch_dir(
            &parent_dir(&self.path),
            Duration::from_millis(150),
            move |p| p.file_name().map(|n| n.to_os_string()) == name,
        )?;
        let store = self.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let s = store.clone();
                let outcome = tokio::task::spawn_blocking(move || s.reload()).await;
                match outcome {
                    Ok(Reload::Changed) => {
                        let n = store.snapshot().len();
                        tracing::info!(file = %store.path.display(), users = n, "users file reloaded");
                    }
                    Ok(Reload::Unchanged) => {}
                    Ok(Reload::NoContent) => tracing::debug!(
                        file = %store.path.display(),
                        "users file empty or missing; keeping the last good copy"
                    ),
                    Ok(Reload::Failed(e)) => tracing::error!(
                        file = %e.source,
                        line = e.line,
                        reason = %e.reason,
                        key = %e.key_path,
                        "users file is invalid; keeping the last good copy: {e}"
                    ),
                    Err(e) => tracing::error!(error = %e, "users reload task failed"),
                }
            }
        });
        Ok(guard)
    }
}
