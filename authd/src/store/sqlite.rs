//! The SQLite state database, owned by one writer thread.
//!
//! All SQL runs on a dedicated thread that owns the connection, so async handlers never
//! block on disk and writes are serialised (no `SQLITE_BUSY` between our own writers).
//! Callers either wait for a result ([`Db::call`]) or fire and forget ([`Db::exec`]).

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;
/// Run by the database thread every [`IDLE_HOOK_EVERY`] (see [`Db::set_idle_hook`]).
type Hook = Box<dyn FnMut(&mut Connection) + Send>;

/// How often the idle hook runs: other processes' changes show within about this long.
pub const IDLE_HOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(300);

enum Msg {
    Job(Job),
    Hook(Hook),
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: sessions and bans
    "CREATE TABLE sessions (
        key BLOB PRIMARY KEY,
        username TEXT NOT NULL,
        level INTEGER NOT NULL,
        cookie_domain TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_activity INTEGER NOT NULL,
        remember_me INTEGER NOT NULL,
        auth_time INTEGER NOT NULL,
        amr TEXT NOT NULL,
        pw_fingerprint INTEGER NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
     );
     CREATE INDEX sessions_user ON sessions(username);
     CREATE TABLE bans (
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (kind, subject)
     );",
    // 2: OIDC grants and stable subject identifiers
    "CREATE TABLE subjects (
        username TEXT PRIMARY KEY,
        sub TEXT NOT NULL UNIQUE
     );
     CREATE TABLE oidc_codes (
        hash BLOB PRIMARY KEY,
        data TEXT NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        expires INTEGER NOT NULL
     );
     CREATE TABLE oidc_tokens (
        hash BLOB PRIMARY KEY,
        family TEXT NOT NULL,
        username TEXT NOT NULL,
        expires INTEGER NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX oidc_tokens_family ON oidc_tokens(family);
     CREATE INDEX oidc_tokens_user ON oidc_tokens(username);
     CREATE TABLE oidc_consents (
        username TEXT NOT NULL,
        client_id TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (username, client_id)
     );",
    // 3: API tokens, one-time login codes, and the log of changes other processes made
    "CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX api_tokens_user ON api_tokens(username);
     CREATE TABLE login_codes (
        hash BLOB PRIMARY KEY,
        username TEXT NOT NULL,
        expires INTEGER NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX login_codes_user ON login_codes(username);
     CREATE TABLE changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        at INTEGER NOT NULL
     );",
    // 4: second factors and ceremony state
    "CREATE TABLE totp (
        username TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        last_used_step INTEGER NOT NULL
     );
     CREATE TABLE passkeys (
        credential_id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX passkeys_user ON passkeys(username);
     CREATE TABLE ceremonies (
        key TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        expires INTEGER NOT NULL
     );",
];

/// Handle to the database thread. Cloning is cheap.
#[derive(Clone)]
pub struct Db {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Db")
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA busy_timeout=5000;
         PRAGMA foreign_keys=ON;
         PRAGMA temp_store=MEMORY;",
    )?;
    migrate(&conn)?;
    // Room for every statement the store runs (about 45), so none is compiled twice.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Schema(format!(
            "the state database has schema version {version}, newer than this daemon knows ({}); refusing to touch it",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    Ok(())
}

/// The database thread: runs jobs in order, and the idle hook (if any) between them.
fn serve(conn: &mut Connection, rx: &mpsc::Receiver<Msg>) {
    use std::time::Instant;
    let mut hook: Option<Hook> = None;
    let mut next = Instant::now() + IDLE_HOOK_EVERY;
    loop {
        let msg = if hook.is_some() {
            match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        };
        match msg {
            Some(Msg::Job(job)) => job(conn),
            Some(Msg::Hook(h)) => hook = Some(h),
            None => {}
        }
        if let Some(h) = hook.as_mut()
            && Instant::now() >= next
        {
            h(conn);
            next = Instant::now() + IDLE_HOOK_EVERY;
        }
    }
}

impl Db {
    /// Installs `hook`, run on the database thread about every [`IDLE_HOOK_EVERY`]
    /// (used to notice commits by other processes, e.g. `halos-authctl`).
    pub fn set_idle_hook(&self, hook: impl FnMut(&mut Connection) + Send + 'static) {
        let _ = self.tx.send(Msg::Hook(Box::new(hook)));
    }

    /// Opens (creating if needed, mode 0600) the database and starts its thread.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        }
        // `:memory:` is SQLite's in-memory database, not a file to create.
        if path != Path::new(":memory:") && !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        }
        let mut conn = open_connection(path)?;
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("state-db".into())
            .spawn(move || serve(&mut conn, &rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Db { tx })
    }

    /// An in-memory database, for tests.
    pub fn memory() -> Result<Db, StoreError> {
        Self::open(Path::new(":memory:"))
    }

    /// Runs `f` on the database thread and waits for its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Box::new(move |c| {
                let _ = reply.send(f(c));
            })))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.await.map_err(|_| StoreError::Closed)??)
    }

    /// Same as [`Db::call`], for synchronous callers (start-up, CLI).
    pub fn call_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Msg::Job(Box::new(move |c| {
                let _ = reply.send(f(c));
            })))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx.recv().map_err(|_| StoreError::Closed)??)
    }

    /// Queues `f` without waiting; failures are logged.
    pub fn exec(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<(), rusqlite::Error> + Send + 'static,
    ) {
        let sent = self.tx.send(Msg::Job(Box::new(move |c| {
            if let Err(e) = f(c) {
                tracing::error!(error = %e, what, "state database write failed");
            }
        })));
        if sent.is_err() {
            tracing::error!(what, "state database thread is gone");
        }
    }
}
