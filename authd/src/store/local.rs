//! The single-node store: state in SQLite, hot data in memory.
//!
//! Sessions are loaded into memory at start-up and every lookup is answered from there;
//! changes are written through to SQLite on its own thread. Activity timestamps are only
//! persisted when more than [`TOUCH_PERSIST_AFTER`] seconds stale, to spare SD cards.
//! API tokens are kept in memory the same way (forward auth checks them per request).
//!
//! Other processes (`halos-authctl` with the daemon running) write the same database.
//! Every change to sessions or API tokens also appends a row to the `changes` table,
//! tagged with the writing process's random origin. The daemon
//! ([`LocalStore::follow_other_processes`]) checks `PRAGMA data_version`, which moves
//! only when another connection commits, every [`super::sqlite::IDLE_HOOK_EVERY`] on
//! the database thread, and applies other origins' rows to its memory.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use rusqlite::params;

use rusqlite::OptionalExtension;

use super::sqlite::Db;
use super::{
    ApiToken, AuthLevel, BanKind, Consent, LoginCode, Redemption, Rotation, Session, SessionKey,
    Store, StoreError, StoredCode, TokenHash, TokenRecord,
};
use super::{PasskeyRecord, StepUse, TotpRecord};

pub const TOUCH_PERSIST_AFTER: i64 = 60;

/// Ceremonies kept at most; the oldest go first.
const MAX_CEREMONIES: i64 = 10_000;

/// Session fields added after the first schema, kept in the `data` JSON column.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct SessionExtra {
    reauth_at: i64,
    must_change_password: bool,
}

pub struct LocalStore {
    pub db: Db,
    /// `sub` per user, cached: it never changes once made.
    subjects: RwLock<HashMap<String, String>>,
    sessions: RwLock<HashMap<SessionKey, Arc<Session>>>,
    failures: Mutex<HashMap<(BanKind, String), VecDeque<i64>>>,
    bans: RwLock<HashMap<(BanKind, String), i64>>,
    api_tokens: RwLock<HashMap<String, Arc<ApiToken>>>,
    /// Random id of this process in the `changes` log.
    origin: String,
    /// The last `changes` row applied (or written) by this process.
    seen_change: AtomicI64,
}

/// Kinds of rows in the `changes` table.
const CHANGE_API_TOKENS: &str = "api_tokens";
const CHANGE_USER_SESSIONS: &str = "user_sessions";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A login's one write.
const SESSION_WRITE: &str = "INSERT OR REPLACE INTO sessions (key, username, level, cookie_domain, created, last_activity, remember_me, auth_time, amr, pw_fingerprint, data)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/// Changes when another process (`halos-authctl`) commits; polled every 300 ms.
const DATA_VERSION: &str = "PRAGMA data_version";

/// Runs one statement through the connection's statement cache: SQLite parses and plans each
/// distinct statement once per connection, not on every call (a login's session write, the
/// 300 ms `PRAGMA data_version` poll).
fn exec<P: rusqlite::Params>(
    c: &rusqlite::Connection,
    sql: &str,
    params: P,
) -> Result<usize, rusqlite::Error> {
    c.prepare_cached(sql)?.execute(params)
}

/// The first row of a cached statement's result (see [`exec`]).
fn one_row<T, P: rusqlite::Params>(
    c: &rusqlite::Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    c.prepare_cached(sql)?.query_row(params, f)
}

/// Appends to the change log (and forgets entries older than an hour).
fn log_change(
    c: &rusqlite::Connection,
    origin: &str,
    kind: &str,
    subject: &str,
) -> Result<(), rusqlite::Error> {
    let now = unix_now();
    exec(
        c,
        "INSERT INTO changes (origin, kind, subject, at) VALUES (?1, ?2, ?3, ?4)",
        params![origin, kind, subject, now],
    )?;
    exec(c, "DELETE FROM changes WHERE at < ?1", params![now - 3600])?;
    Ok(())
}

fn read_api_tokens(
    c: &rusqlite::Connection,
) -> Result<HashMap<String, Arc<ApiToken>>, rusqlite::Error> {
    let mut st = c.prepare_cached("SELECT data FROM api_tokens")?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    let mut map = HashMap::new();
    for row in rows {
        let t: ApiToken = from_json(&row?)?;
        map.insert(t.id.clone(), Arc::new(t));
    }
    Ok(map)
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalStore")
    }
}

fn read_sessions(db: &Db) -> Result<HashMap<SessionKey, Arc<Session>>, StoreError> {
    db.call_blocking(|c| {
        let mut st = c.prepare(
            "SELECT key, username, level, cookie_domain, created, last_activity, remember_me, auth_time, amr, pw_fingerprint, data FROM sessions",
        )?;
        let rows = st.query_map([], |r| {
            let key: Vec<u8> = r.get(0)?;
            let amr: String = r.get(8)?;
            let extra: SessionExtra = serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default();
            Ok((
                key,
                Session {
                    key: [0; 32],
                    username: r.get(1)?,
                    level: AuthLevel::from_u8(r.get::<_, i64>(2)? as u8),
                    cookie_domain: r.get(3)?,
                    created: r.get(4)?,
                    last_activity: r.get(5)?,
                    remember_me: r.get::<_, i64>(6)? != 0,
                    auth_time: r.get(7)?,
                    amr: amr.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
                    pw_fingerprint: r.get::<_, i64>(9)? as u64,
                    reauth_at: extra.reauth_at,
                    must_change_password: extra.must_change_password,
                },
            ))
        })?;
        let mut map = HashMap::new();
        for row in rows {
            let (key, mut s) = row?;
            if let Ok(k) = <[u8; 32]>::try_from(key.as_slice()) {
                s.key = k;
                map.insert(k, Arc::new(s));
            }
        }
        Ok(map)
    })
}

impl LocalStore {
    pub fn open(path: &Path) -> Result<LocalStore, StoreError> {
        Self::with_db(Db::open(path)?)
    }

    pub fn with_db(db: Db) -> Result<LocalStore, StoreError> {
        let sessions = read_sessions(&db)?;
        let bans = db.call_blocking(|c| {
            let mut st = c.prepare("SELECT kind, subject, until FROM bans")?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            let mut m = HashMap::new();
            for row in rows {
                let (kind, subject, until) = row?;
                let kind = if kind == "ip" {
                    BanKind::Ip
                } else {
                    BanKind::User
                };
                m.insert((kind, subject), until);
            }
            Ok(m)
        })?;
        let (api_tokens, seen) = db.call_blocking(|c| {
            let seen: i64 =
                c.query_row("SELECT COALESCE(MAX(id), 0) FROM changes", [], |r| r.get(0))?;
            // Compiled with the rest of start-up: the first login and change poll compile nothing.
            c.prepare_cached(SESSION_WRITE)?;
            c.prepare_cached(DATA_VERSION)?;
            Ok((read_api_tokens(c)?, seen))
        })?;
        let mut raw = [0u8; 16];
        crate::users::hash::random_bytes(&mut raw);
        Ok(LocalStore {
            db,
            subjects: RwLock::new(HashMap::new()),
            sessions: RwLock::new(sessions),
            failures: Mutex::new(HashMap::new()),
            bans: RwLock::new(bans),
            api_tokens: RwLock::new(api_tokens),
            origin: hex::encode(raw),
            seen_change: AtomicI64::new(seen),
        })
    }

    /// Makes this store notice, within about [`super::sqlite::IDLE_HOOK_EVERY`], the
    /// sessions and API tokens other processes changed in the database (the daemon calls
    /// it; the CLI does not need it).
    pub fn follow_other_processes(self: &Arc<Self>) {
        let store: Weak<LocalStore> = Arc::downgrade(self);
        let mut data_version: Option<i64> = None;
        self.db.set_idle_hook(move |c| {
            let Some(store) = store.upgrade() else {
                return;
            };
            let v: i64 = match one_row(c, DATA_VERSION, [], |r| r.get(0)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "state database: cannot read data_version");
                    return;
                }
            };
            if data_version.replace(v) == Some(v) {
                return;
            }
            if let Err(e) = store.apply_other_changes(c) {
                tracing::error!(error = %e, "state database: cannot apply changes made by another process");
            }
        });
    }

    /// Runs on the database thread: applies `changes` rows written by other processes.
    fn apply_other_changes(&self, c: &rusqlite::Connection) -> Result<(), StoreError> {
        let seen = self.seen_change.load(Ordering::Acquire);
        let rows: Vec<(i64, String, String, String, i64)> = {
            let mut st = c.prepare_cached(
                "SELECT id, origin, kind, subject, at FROM changes WHERE id > ?1 ORDER BY id",
            )?;
            st.query_map(params![seen], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let mut reload_tokens = false;
        for (id, origin, kind, subject, at) in &rows {
            self.seen_change.fetch_max(*id, Ordering::AcqRel);
            if *origin == self.origin {
                continue;
            }
            match kind.as_str() {
                CHANGE_API_TOKENS => reload_tokens = true,
                CHANGE_USER_SESSIONS => {
                    // Sessions started after the revocation (by this process) stay.
                    let mut m = self.sessions.write().map_err(|_| StoreError::Unavailable)?;
                    let before = m.len();
                    m.retain(|_, s| s.username != *subject || s.created > *at);
                    tracing::info!(user = %subject, sessions = before - m.len(), "sessions revoked by another process");
                }
                _ => {}
            }
        }
        if reload_tokens {
            let fresh = read_api_tokens(c)?;
            let mut m = self
                .api_tokens
                .write()
                .map_err(|_| StoreError::Unavailable)?;
            let merged = fresh
                .into_iter()
                .map(|(id, t)| {
                    // Keep the newer use time: ours is persisted lazily.
                    let ours = m.get(&id).and_then(|o| o.last_used);
                    let t = if ours > t.last_used {
                        Arc::new(ApiToken {
                            last_used: ours,
                            ..(*t).clone()
                        })
                    } else {
                        t
                    };
                    (id, t)
                })
                .collect();
            *m = merged;
            tracing::info!(
                tokens = m.len(),
                "API tokens reloaded after a change by another process"
            );
        }
        Ok(())
    }

    pub fn session_count(&self) -> usize {
        self.sessions.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Drops sessions for which `expired` says so (run on a timer).
    pub fn purge(&self, expired: impl Fn(&Session) -> bool) -> usize {
        let keys: Vec<SessionKey> = match self.sessions.write() {
            Ok(mut m) => {
                let keys: Vec<_> = m.values().filter(|s| expired(s)).map(|s| s.key).collect();
                for k in &keys {
                    m.remove(k);
                }
                keys
            }
            Err(_) => return 0,
        };
        let n = keys.len();
        if n > 0 {
            self.db.exec("purge sessions", move |c| {
                let tx = c.transaction()?;
                for k in keys {
                    exec(
                        &tx,
                        "DELETE FROM sessions WHERE key = ?1",
                        params![k.as_slice()],
                    )?;
                }
                tx.commit()
            });
        }
        n
    }

    /// Writes the session before the login answers: a login the browser saw must survive
    /// a crash or restart right after it (logins are rare; the write is one row).
    async fn persist(&self, s: &Session) -> Result<(), StoreError> {
        let s = s.clone();
        self.db
            .call(move |c| {
                exec(
                    c,
                    SESSION_WRITE,
                    params![
                        s.key.as_slice(),
                        s.username,
                        s.level as u8 as i64,
                        s.cookie_domain,
                        s.created,
                        s.last_activity,
                        s.remember_me as i64,
                        s.auth_time,
                        s.amr.join(","),
                        s.pw_fingerprint as i64,
                        to_json(&SessionExtra {
                            reauth_at: s.reauth_at,
                            must_change_password: s.must_change_password,
                        })?
                    ],
                )?;
                Ok(())
            })
            .await
    }
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, rusqlite::Error> {
    serde_json::to_string(v).map_err(json_err)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, rusqlite::Error> {
    serde_json::from_str(s).map_err(json_err)
}

fn load_token(
    c: &rusqlite::Connection,
    hash: &[u8],
) -> Result<Option<TokenRecord>, rusqlite::Error> {
    let data: Option<String> = one_row(
        c,
        "SELECT data FROM oidc_tokens WHERE hash = ?1",
        params![hash],
        |r| r.get(0),
    )
    .optional()?;
    data.map(|d| from_json(&d)).transpose()
}

fn store_token(
    c: &rusqlite::Connection,
    hash: &[u8],
    t: &TokenRecord,
) -> Result<(), rusqlite::Error> {
    exec(
        c,
        "INSERT OR REPLACE INTO oidc_tokens (hash, family, username, expires, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            hash,
            t.family,
            t.grant.username,
            t.grant.expires_at,
            to_json(t)?
        ],
    )?;
    Ok(())
}

/// Marks every token matching `filter_sql` (one parameter) revoked; returns how many.
fn revoke_where(
    c: &mut rusqlite::Connection,
    filter_sql: &str,
    param: &str,
) -> Result<u32, rusqlite::Error> {
    let tx = c.transaction()?;
    let rows: Vec<(Vec<u8>, String)> = {
        let mut st = tx.prepare(&format!(
            "SELECT hash, data FROM oidc_tokens WHERE {filter_sql}"
        ))?;
        st.query_map(params![param], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    let mut n = 0;
    for (hash, data) in rows {
        let mut t: TokenRecord = from_json(&data)?;
        if !t.revoked {
            t.revoked = true;
            n += 1;
            store_token(&tx, &hash, &t)?;
        }
    }
    tx.commit()?;
    Ok(n)
}

impl Store for LocalStore {
    async fn totp(&self, username: &str) -> Result<Option<TotpRecord>, StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| {
                let row: Option<(String, i64)> = one_row(
                    c,
                    "SELECT data, last_used_step FROM totp WHERE username = ?1",
                    params![user],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
                row.map(|(d, step)| {
                    let mut t: TotpRecord = from_json(&d)?;
                    t.last_used_step = step as u64;
                    Ok(t)
                })
                .transpose()
            })
            .await
    }

    async fn save_totp(&self, username: &str, record: TotpRecord) -> Result<(), StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| {
                exec(c,
                    "INSERT OR REPLACE INTO totp (username, data, last_used_step) VALUES (?1, ?2, ?3)",
                    params![user, to_json(&record)?, record.last_used_step as i64],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_totp(&self, username: &str) -> Result<bool, StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| Ok(exec(c, "DELETE FROM totp WHERE username = ?1", params![user])? > 0))
            .await
    }

    async fn use_totp_step(&self, username: &str, step: u64) -> Result<StepUse, StoreError> {
        let user = username.to_string();
        // One conditional UPDATE on the single writer thread: compare-and-set.
        self.db
            .call(move |c| {
                let n = exec(c,
                    "UPDATE totp SET last_used_step = ?2 WHERE username = ?1 AND last_used_step < ?2",
                    params![user, step as i64],
                )?;
                if n > 0 {
                    return Ok(StepUse::Accepted);
                }
                let exists = one_row(c, "SELECT 1 FROM totp WHERE username = ?1", params![user], |_| Ok(()))
                    .optional()?
                    .is_some();
                Ok(if exists { StepUse::Replayed } else { StepUse::NotEnrolled })
            })
            .await
    }

    async fn passkeys(&self, username: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT data FROM passkeys WHERE username = ?1 ORDER BY rowid",
                )?;
                let rows = st.query_map(params![user], |r| r.get::<_, String>(0))?;
                rows.map(|d| from_json(&d?)).collect()
            })
            .await
    }

    async fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>, StoreError> {
        let id = credential_id.to_string();
        self.db
            .call(move |c| {
                let d: Option<String> = one_row(
                    c,
                    "SELECT data FROM passkeys WHERE credential_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
                d.map(|d| from_json(&d)).transpose()
            })
            .await
    }

    async fn save_passkey(&self, record: PasskeyRecord) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                // An update keeps the row (and so the list order); a new id is appended.
                let n = exec(
                    c,
                    "UPDATE passkeys SET data = ?3 WHERE credential_id = ?1 AND username = ?2",
                    params![record.credential_id, record.username, to_json(&record)?],
                )?;
                if n == 0 {
                    exec(
                        c,
                        "INSERT INTO passkeys (credential_id, username, data) VALUES (?1, ?2, ?3)",
                        params![record.credential_id, record.username, to_json(&record)?],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn delete_passkey(
        &self,
        username: &str,
        credential_id: &str,
    ) -> Result<bool, StoreError> {
        let (user, id) = (username.to_string(), credential_id.to_string());
        self.db
            .call(move |c| {
                Ok(exec(
                    c,
                    "DELETE FROM passkeys WHERE credential_id = ?1 AND username = ?2",
                    params![id, user],
                )? > 0)
            })
            .await
    }

    async fn put_ceremony(&self, key: &str, data: String, expires: i64) -> Result<(), StoreError> {
        let key = key.to_string();
        self.db
            .call(move |c| {
                exec(c,
                    "INSERT OR REPLACE INTO ceremonies (key, data, expires) VALUES (?1, ?2, ?3)",
                    params![key, data, expires],
                )?;
                // Ceremonies last minutes: anything an hour older than this one is over.
                // And a flood of unauthenticated starts cannot grow the table without bound.
                exec(c,
                    "DELETE FROM ceremonies WHERE expires < ?1",
                    params![expires - 3_600],
                )?;
                exec(c,
                    "DELETE FROM ceremonies WHERE key IN (SELECT key FROM ceremonies ORDER BY expires, rowid
                     LIMIT max(0, (SELECT count(*) FROM ceremonies) - ?1))",
                    params![MAX_CEREMONIES],
                )?;
                Ok(())
            })
            .await
    }

    async fn take_ceremony(&self, key: &str, now: i64) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.db
            .call(move |c| {
                let row: Option<(String, i64)> = one_row(
                    c,
                    "DELETE FROM ceremonies WHERE key = ?1 RETURNING data, expires",
                    params![key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
                Ok(row.filter(|(_, exp)| now < *exp).map(|(d, _)| d))
            })
            .await
    }

    async fn api_token(&self, id: &str) -> Result<Option<Arc<ApiToken>>, StoreError> {
        Ok(self
            .api_tokens
            .read()
            .map_err(|_| StoreError::Unavailable)?
            .get(id)
            .cloned())
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let m = self
            .api_tokens
            .read()
            .map_err(|_| StoreError::Unavailable)?;
        let mut v: Vec<ApiToken> = m.values().map(|t| (**t).clone()).collect();
        v.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(v)
    }

    async fn save_api_token(&self, token: ApiToken) -> Result<(), StoreError> {
        // Database first, then memory: a reload racing with us cannot resurrect or lose it.
        let origin = self.origin.clone();
        let t = token.clone();
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                exec(
                    &tx,
                    "INSERT OR REPLACE INTO api_tokens (id, username, data) VALUES (?1, ?2, ?3)",
                    params![t.id, t.username, to_json(&t)?],
                )?;
                log_change(&tx, &origin, CHANGE_API_TOKENS, &t.id)?;
                tx.commit()
            })
            .await?;
        self.api_tokens
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .insert(token.id.clone(), Arc::new(token));
        Ok(())
    }

    async fn delete_api_token(&self, id: &str) -> Result<bool, StoreError> {
        let origin = self.origin.clone();
        let key = id.to_string();
        let n = self
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let n = exec(&tx, "DELETE FROM api_tokens WHERE id = ?1", params![key])?;
                if n > 0 {
                    log_change(&tx, &origin, CHANGE_API_TOKENS, &key)?;
                }
                tx.commit()?;
                Ok(n)
            })
            .await?;
        let was = self
            .api_tokens
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .remove(id)
            .is_some();
        Ok(n > 0 || was)
    }

    async fn delete_user_api_tokens(&self, username: &str) -> Result<u32, StoreError> {
        let origin = self.origin.clone();
        let user = username.to_string();
        let n = self
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let n = exec(
                    &tx,
                    "DELETE FROM api_tokens WHERE username = ?1",
                    params![user],
                )?;
                if n > 0 {
                    log_change(&tx, &origin, CHANGE_API_TOKENS, &user)?;
                }
                tx.commit()?;
                Ok(n as u32)
            })
            .await?;
        let mut m = self
            .api_tokens
            .write()
            .map_err(|_| StoreError::Unavailable)?;
        let before = m.len();
        m.retain(|_, t| t.username != username);
        Ok(n.max((before - m.len()) as u32))
    }

    async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        // Most requests land in the same second as the previous use: a read lock decides.
        let stale = self
            .api_tokens
            .read()
            .map_err(|_| StoreError::Unavailable)?
            .get(id)
            .is_some_and(|t| t.last_used.is_none_or(|u| now > u));
        if !stale {
            return Ok(());
        }
        let updated = {
            let mut m = self
                .api_tokens
                .write()
                .map_err(|_| StoreError::Unavailable)?;
            let Some(cur) = m.get_mut(id) else {
                return Ok(());
            };
            if cur.last_used.is_some_and(|t| now <= t) {
                return Ok(());
            }
            let persist = cur.last_used.is_none_or(|t| now - t > TOUCH_PERSIST_AFTER);
            let t = Arc::new(ApiToken {
                last_used: Some(now),
                ..(**cur).clone()
            });
            *cur = Arc::clone(&t);
            persist.then_some(t)
        };
        if let Some(t) = updated {
            // No change-log row: a use time is not worth waking other processes for.
            self.db.exec("touch API token", move |c| {
                exec(
                    c,
                    "UPDATE api_tokens SET data = ?1 WHERE id = ?2",
                    params![to_json(&*t)?, t.id],
                )?;
                Ok(())
            });
        }
        Ok(())
    }

    async fn save_login_code(&self, hash: TokenHash, code: LoginCode) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                exec(c,
                    "DELETE FROM login_codes WHERE expires <= ?1",
                    params![code.created],
                )?;
                exec(c,
                    "INSERT INTO login_codes (hash, username, expires, data) VALUES (?1, ?2, ?3, ?4)",
                    params![hash.as_slice(), code.username, code.expires, to_json(&code)?],
                )?;
                Ok(())
            })
            .await
    }

    async fn take_login_code(
        &self,
        hash: TokenHash,
        now: i64,
    ) -> Result<Option<LoginCode>, StoreError> {
        // One statement: whoever deletes the row owns the code, in any process.
        self.db
            .call(move |c| {
                let data: Option<String> = one_row(
                    c,
                    "DELETE FROM login_codes WHERE hash = ?1 RETURNING data",
                    params![hash.as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
                let code: Option<LoginCode> = data.map(|d| from_json(&d)).transpose()?;
                Ok(code.filter(|code| now < code.expires))
            })
            .await
    }

    async fn delete_user_login_codes(&self, username: &str) -> Result<u32, StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| {
                exec(
                    c,
                    "DELETE FROM login_codes WHERE username = ?1",
                    params![user],
                )
                .map(|n| n as u32)
            })
            .await
    }

    async fn subject(&self, username: &str) -> Result<String, StoreError> {
        if let Some(s) = self
            .subjects
            .read()
            .map_err(|_| StoreError::Unavailable)?
            .get(username)
        {
            return Ok(s.clone());
        }
        let mut raw = [0u8; 16];
        crate::users::hash::random_bytes(&mut raw);
        let fresh = hex::encode(raw);
        let user = username.to_string();
        let sub = self
            .db
            .call(move |c| {
                exec(
                    c,
                    "INSERT OR IGNORE INTO subjects (username, sub) VALUES (?1, ?2)",
                    params![user, fresh],
                )?;
                one_row(
                    c,
                    "SELECT sub FROM subjects WHERE username = ?1",
                    params![user],
                    |r| r.get::<_, String>(0),
                )
            })
            .await?;
        self.subjects
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .insert(username.to_string(), sub.clone());
        Ok(sub)
    }

    async fn save_code(&self, hash: TokenHash, code: StoredCode) -> Result<(), StoreError> {
        self.db
            .call(move |c| {
                exec(
                    c,
                    "INSERT INTO oidc_codes (hash, data, used, expires) VALUES (?1, ?2, 0, ?3)",
                    params![hash.as_slice(), to_json(&code)?, code.grant.expires_at],
                )?;
                // Old codes are useless after their lifetime plus a margin for replay detection.
                exec(
                    c,
                    "DELETE FROM oidc_codes WHERE expires < ?1",
                    params![code.grant.expires_at - 86_400],
                )?;
                Ok(())
            })
            .await
    }

    async fn redeem_code(&self, hash: TokenHash, now: i64) -> Result<Redemption, StoreError> {
        // Runs on the single database thread: check-and-mark is atomic.
        self.db
            .call(move |c| {
                let row: Option<(String, i64)> = one_row(
                    c,
                    "SELECT data, used FROM oidc_codes WHERE hash = ?1",
                    params![hash.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
                let Some((data, used)) = row else {
                    return Ok(Redemption::Unknown);
                };
                let code: StoredCode = from_json(&data)?;
                if used != 0 {
                    return Ok(Redemption::Replayed {
                        family: code.family,
                    });
                }
                exec(
                    c,
                    "UPDATE oidc_codes SET used = 1 WHERE hash = ?1",
                    params![hash.as_slice()],
                )?;
                if now >= code.grant.expires_at {
                    return Ok(Redemption::Unknown);
                }
                Ok(Redemption::Fresh(code))
            })
            .await
    }

    async fn save_token(&self, hash: TokenHash, token: TokenRecord) -> Result<(), StoreError> {
        self.db
            .call(move |c| store_token(c, hash.as_slice(), &token))
            .await
    }

    async fn token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.db.call(move |c| load_token(c, hash.as_slice())).await
    }

    async fn rotate_refresh(
        &self,
        old: TokenHash,
        new: TokenHash,
        new_token: TokenRecord,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let Some(mut cur) = load_token(&tx, old.as_slice())? else {
                    return Ok(Rotation::Invalid);
                };
                if cur.kind != super::TokenKind::Refresh
                    || cur.revoked
                    || now >= cur.grant.expires_at
                {
                    return Ok(Rotation::Invalid);
                }
                if cur.used {
                    // Reuse of a rotated token: someone holds a copy. Revoke the family.
                    let family = cur.family.clone();
                    drop(tx);
                    revoke_where(c, "family = ?1", &family)?;
                    return Ok(Rotation::Reused);
                }
                cur.used = true;
                store_token(&tx, old.as_slice(), &cur)?;
                store_token(&tx, new.as_slice(), &new_token)?;
                exec(
                    &tx,
                    "DELETE FROM oidc_tokens WHERE expires < ?1",
                    params![now - 86_400],
                )?;
                tx.commit()?;
                Ok(Rotation::Rotated(cur))
            })
            .await
    }

    async fn revoke_token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        self.db
            .call(move |c| {
                let Some(mut t) = load_token(c, hash.as_slice())? else {
                    return Ok(None);
                };
                t.revoked = true;
                store_token(c, hash.as_slice(), &t)?;
                Ok(Some(t))
            })
            .await
    }

    async fn revoke_family(&self, family: &str) -> Result<u32, StoreError> {
        let family = family.to_string();
        self.db
            .call(move |c| revoke_where(c, "family = ?1", &family))
            .await
    }

    async fn revoke_user_tokens(&self, username: &str) -> Result<u32, StoreError> {
        let user = username.to_string();
        self.db
            .call(move |c| revoke_where(c, "username = ?1", &user))
            .await
    }

    async fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let (u, cl) = (username.to_string(), client_id.to_string());
        self.db
            .call(move |c| {
                let d: Option<String> = one_row(
                    c,
                    "SELECT data FROM oidc_consents WHERE username = ?1 AND client_id = ?2",
                    params![u, cl],
                    |r| r.get(0),
                )
                .optional()?;
                d.map(|d| from_json(&d)).transpose()
            })
            .await
    }

    async fn save_consent(
        &self,
        username: &str,
        client_id: &str,
        consent: Consent,
    ) -> Result<(), StoreError> {
        let (u, cl) = (username.to_string(), client_id.to_string());
        self.db
            .call(move |c| {
                exec(c,
                    "INSERT OR REPLACE INTO oidc_consents (username, client_id, data) VALUES (?1, ?2, ?3)",
                    params![u, cl, to_json(&consent)?],
                )?;
                Ok(())
            })
            .await
    }

    async fn session(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        Ok(self
            .sessions
            .read()
            .map_err(|_| StoreError::Unavailable)?
            .get(key)
            .cloned())
    }

    async fn save_session(&self, s: Session) -> Result<(), StoreError> {
        self.persist(&s).await?;
        self.sessions
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .insert(s.key, Arc::new(s));
        Ok(())
    }

    async fn touch_session(&self, s: &Session, now: i64) -> Result<(), StoreError> {
        if now <= s.last_activity {
            return Ok(());
        }
        let mut updated = s.clone();
        updated.last_activity = now;
        let persist = now - s.last_activity > TOUCH_PERSIST_AFTER;
        {
            let mut m = self.sessions.write().map_err(|_| StoreError::Unavailable)?;
            // Only if it still exists: a concurrent logout wins.
            match m.get_mut(&s.key) {
                Some(cur) => *cur = Arc::new(updated.clone()),
                None => return Ok(()),
            }
        }
        if persist {
            let key = updated.key;
            self.db.exec("touch session", move |c| {
                exec(
                    c,
                    "UPDATE sessions SET last_activity = ?1 WHERE key = ?2",
                    params![now, key.as_slice()],
                )?;
                Ok(())
            });
        }
        Ok(())
    }

    async fn delete_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.sessions
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .remove(key);
        let key = *key;
        self.db
            .call(move |c| {
                exec(
                    c,
                    "DELETE FROM sessions WHERE key = ?1",
                    params![key.as_slice()],
                )
                .map(|_| ())
            })
            .await
    }

    async fn delete_user_sessions(&self, username: &str) -> Result<u32, StoreError> {
        let n = {
            let mut m = self.sessions.write().map_err(|_| StoreError::Unavailable)?;
            let before = m.len();
            m.retain(|_, s| s.username != username);
            (before - m.len()) as u32
        };
        let user = username.to_string();
        let origin = self.origin.clone();
        let deleted = self
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                let n = exec(
                    &tx,
                    "DELETE FROM sessions WHERE username = ?1",
                    params![user],
                )?;
                log_change(&tx, &origin, CHANGE_USER_SESSIONS, &user)?;
                tx.commit()?;
                Ok(n as u32)
            })
            .await?;
        // The database may know sessions this process has not loaded (the CLI), or miss
        // ones whose write is still queued (the daemon).
        Ok(n.max(deleted))
    }

    async fn delete_stale_sessions(&self, username: &str, keep: u64) -> Result<u32, StoreError> {
        let n = {
            let mut m = self.sessions.write().map_err(|_| StoreError::Unavailable)?;
            let before = m.len();
            m.retain(|_, s| s.username != username || s.pw_fingerprint == keep);
            (before - m.len()) as u32
        };
        let user = username.to_string();
        self.db
            .call(move |c| {
                exec(
                    c,
                    "DELETE FROM sessions WHERE username = ?1 AND pw_fingerprint != ?2",
                    params![user, keep as i64],
                )
                .map(|_| ())
            })
            .await?;
        Ok(n)
    }

    async fn record_failure(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
        window: i64,
    ) -> Result<u32, StoreError> {
        let mut m = self.failures.lock().map_err(|_| StoreError::Unavailable)?;
        // Bound memory under a spray of random user names: forget the oldest entries.
        if m.len() > 10_000 {
            m.retain(|_, q| q.back().is_some_and(|t| now - t <= window));
        }
        let q = m.entry((kind, subject.to_string())).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now - t > window) {
            q.pop_front();
        }
        while q.len() > 64 {
            q.pop_front();
        }
        Ok(q.len() as u32)
    }

    async fn clear_failures(&self, kind: BanKind, subject: &str) -> Result<(), StoreError> {
        self.failures
            .lock()
            .map_err(|_| StoreError::Unavailable)?
            .remove(&(kind, subject.to_string()));
        Ok(())
    }

    async fn ban(&self, kind: BanKind, subject: &str, until: i64) -> Result<(), StoreError> {
        self.bans
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .insert((kind, subject.to_string()), until);
        let subject = subject.to_string();
        self.db.exec("ban", move |c| {
            exec(
                c,
                "INSERT OR REPLACE INTO bans (kind, subject, until) VALUES (?1, ?2, ?3)",
                params![kind.as_str(), subject, until],
            )?;
            Ok(())
        });
        Ok(())
    }

    async fn banned_until(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let m = self.bans.read().map_err(|_| StoreError::Unavailable)?;
        Ok(m.get(&(kind, subject.to_string()))
            .copied()
            .filter(|u| *u > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u8, user: &str) -> Session {
        Session {
            key: [n; 32],
            username: user.into(),
            level: AuthLevel::OneFactor,
            cookie_domain: "halos.local".into(),
            created: 100,
            last_activity: 100,
            remember_me: false,
            auth_time: 100,
            amr: vec!["pwd".into()],
            pw_fingerprint: 7,
            reauth_at: 100,
            must_change_password: n == 2,
        }
    }

    #[tokio::test]
    async fn sessions_survive_reopen_and_logout_is_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let s = LocalStore::open(&path).unwrap();
            s.save_session(session(1, "a")).await.unwrap();
            s.save_session(session(2, "a")).await.unwrap();
            s.save_session(session(3, "b")).await.unwrap();
            s.delete_session(&[3; 32]).await.unwrap();
            s.touch_session(&session(1, "a"), 100 + TOUCH_PERSIST_AFTER + 1)
                .await
                .unwrap();
            s.ban(BanKind::User, "a", 5000).await.unwrap();
            s.db.call(|_| Ok(())).await.unwrap(); // drain the writer
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.session_count(), 2);
        let one = s.session(&[1; 32]).await.unwrap().unwrap();
        assert_eq!(one.last_activity, 100 + TOUCH_PERSIST_AFTER + 1);
        assert_eq!(one.amr, vec!["pwd"]);
        assert!(s.session(&[3; 32]).await.unwrap().is_none());
        assert_eq!(
            s.banned_until(BanKind::User, "a", 10).await.unwrap(),
            Some(5000)
        );
        assert_eq!(
            s.banned_until(BanKind::User, "a", 6000).await.unwrap(),
            None
        );
        assert_eq!(s.delete_user_sessions("a").await.unwrap(), 2);
        assert_eq!(s.session_count(), 0);
    }

    #[tokio::test]
    async fn failures_count_within_the_window() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        assert_eq!(
            s.record_failure(BanKind::Ip, "1.2.3.4", 0, 120)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            s.record_failure(BanKind::Ip, "1.2.3.4", 60, 120)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            s.record_failure(BanKind::Ip, "1.2.3.4", 170, 120)
                .await
                .unwrap(),
            2
        );
        s.clear_failures(BanKind::Ip, "1.2.3.4").await.unwrap();
        assert_eq!(
            s.record_failure(BanKind::Ip, "1.2.3.4", 201, 120)
                .await
                .unwrap(),
            1
        );
    }

    fn grant(expires_at: i64) -> crate::oidc::token_request::RefreshGrant {
        crate::oidc::token_request::RefreshGrant {
            client_id: "c".into(),
            scopes: crate::oidc::Scopes::empty().with(crate::oidc::Scope::Openid),
            username: "ann".into(),
            sub: "s".into(),
            auth_time: 1,
            auth_methods: Default::default(),
            expires_at,
        }
    }

    fn code(family: &str) -> StoredCode {
        let g = grant(100);
        StoredCode {
            grant: crate::oidc::token_request::CodeGrant {
                client_id: g.client_id,
                redirect_uri: "https://a/cb".into(),
                code_challenge: None,
                scopes: g.scopes,
                nonce: None,
                username: g.username,
                sub: g.sub,
                auth_time: 1,
                auth_methods: Default::default(),
                issued_at: 1,
                expires_at: 100,
            },
            family: family.into(),
        }
    }

    fn refresh(family: &str) -> TokenRecord {
        TokenRecord {
            kind: super::super::TokenKind::Refresh,
            family: family.into(),
            grant: grant(1000),
            issued: 1,
            used: false,
            revoked: false,
        }
    }

    #[tokio::test]
    async fn codes_are_single_use_and_refresh_reuse_revokes_the_family() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        s.save_code([1; 32], code("f1")).await.unwrap();
        assert!(matches!(
            s.redeem_code([1; 32], 10).await.unwrap(),
            Redemption::Fresh(_)
        ));
        assert_eq!(
            s.redeem_code([1; 32], 11).await.unwrap(),
            Redemption::Replayed {
                family: "f1".into()
            }
        );
        assert_eq!(
            s.redeem_code([9; 32], 11).await.unwrap(),
            Redemption::Unknown
        );
        s.save_code([2; 32], code("f2")).await.unwrap();
        assert_eq!(
            s.redeem_code([2; 32], 100).await.unwrap(),
            Redemption::Unknown,
            "expired"
        );

        s.save_token([3; 32], refresh("f1")).await.unwrap();
        assert!(matches!(
            s.rotate_refresh([3; 32], [4; 32], refresh("f1"), 5)
                .await
                .unwrap(),
            Rotation::Rotated(_)
        ));
        assert!(s.token([4; 32]).await.unwrap().unwrap().active(5));
        // Presenting the old one again: reuse → the new one is revoked too.
        assert_eq!(
            s.rotate_refresh([3; 32], [5; 32], refresh("f1"), 6)
                .await
                .unwrap(),
            Rotation::Reused
        );
        assert!(!s.token([4; 32]).await.unwrap().unwrap().active(6));
        assert!(s.token([5; 32]).await.unwrap().is_none());
        assert_eq!(
            s.revoke_user_tokens("ann").await.unwrap(),
            0,
            "all already revoked"
        );
    }

    #[tokio::test]
    async fn subjects_are_stable_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sqlite");
        let (a, b) = {
            let s = LocalStore::open(&p).unwrap();
            (
                s.subject("ann").await.unwrap(),
                s.subject("bob").await.unwrap(),
            )
        };
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let s = LocalStore::open(&p).unwrap();
        assert_eq!(s.subject("ann").await.unwrap(), a);
    }

    fn api_token(id: &str, user: &str) -> ApiToken {
        ApiToken {
            id: id.into(),
            username: user.into(),
            name: String::new(),
            secret_hash: [7; 32],
            host: None,
            path: None,
            created: 1,
            expires: None,
            last_used: None,
        }
    }

    /// Waits (bounded) for the database thread's idle hook to apply another process's change.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "timed out: {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn changes_by_another_process_reach_the_followers_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let daemon = Arc::new(LocalStore::open(&path).unwrap());
        daemon.follow_other_processes();
        daemon.save_session(session(1, "a")).await.unwrap();
        daemon.save_session(session(2, "b")).await.unwrap();
        daemon.save_api_token(api_token("mine", "b")).await.unwrap();
        daemon.db.call(|_| Ok(())).await.unwrap();

        let cli = LocalStore::open(&path).unwrap();
        cli.save_api_token(api_token("t1", "a")).await.unwrap();
        assert_eq!(cli.delete_user_sessions("a").await.unwrap(), 1);
        let has_token = |id: &str| daemon.api_tokens.read().unwrap().contains_key(id);
        eventually("token created elsewhere", || has_token("t1")).await;
        eventually("sessions revoked elsewhere", || {
            daemon.sessions.read().unwrap().get(&[1; 32]).is_none()
        })
        .await;
        assert!(daemon.sessions.read().unwrap().contains_key(&[2; 32]));
        assert!(has_token("mine"));

        // The follower's own lazily recorded use survives a reload.
        daemon.touch_api_token("mine", 500).await.unwrap();
        assert!(cli.delete_api_token("t1").await.unwrap());
        eventually("token revoked elsewhere", || !has_token("t1")).await;
        assert_eq!(
            daemon.api_token("mine").await.unwrap().unwrap().last_used,
            Some(500)
        );
        assert_eq!(cli.delete_user_api_tokens("b").await.unwrap(), 1);
        eventually("user's tokens revoked elsewhere", || !has_token("mine")).await;
    }

    #[tokio::test]
    async fn login_codes_are_taken_once() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        let code = LoginCode {
            username: "a".into(),
            created: 10,
            expires: 20,
        };
        s.save_login_code([1; 32], code.clone()).await.unwrap();
        s.save_login_code([2; 32], code.clone()).await.unwrap();
        assert_eq!(s.take_login_code([1; 32], 15).await.unwrap(), Some(code));
        assert_eq!(s.take_login_code([1; 32], 15).await.unwrap(), None);
        assert_eq!(
            s.take_login_code([2; 32], 20).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(s.take_login_code([2; 32], 15).await.unwrap(), None, "gone");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        drop(LocalStore::open(&path).unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(c);
        assert!(matches!(
            LocalStore::open(&path),
            Err(StoreError::Schema(_))
        ));
    }
    #[tokio::test]
    async fn session_extras_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        {
            let s = LocalStore::open(&path).unwrap();
            s.save_session(session(2, "a")).await.unwrap();
            s.db.call(|_| Ok(())).await.unwrap();
        }
        let s = LocalStore::open(&path).unwrap();
        let got = s.session(&[2; 32]).await.unwrap().unwrap();
        assert!(got.must_change_password);
        assert_eq!(got.reauth_at, 100);
    }

    fn totp_record() -> TotpRecord {
        TotpRecord {
            secret_hex: "00".repeat(20),
            algorithm: "sha1".into(),
            digits: 6,
            period: 30,
            created: 1,
            last_used_step: 0,
        }
    }

    #[tokio::test]
    async fn totp_step_is_compare_and_set() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        assert_eq!(s.use_totp_step("a", 5).await.unwrap(), StepUse::NotEnrolled);
        s.save_totp("a", totp_record()).await.unwrap();
        assert_eq!(s.use_totp_step("a", 5).await.unwrap(), StepUse::Accepted);
        assert_eq!(s.use_totp_step("a", 5).await.unwrap(), StepUse::Replayed);
        assert_eq!(s.use_totp_step("a", 4).await.unwrap(), StepUse::Replayed);
        assert_eq!(s.use_totp_step("a", 6).await.unwrap(), StepUse::Accepted);
        assert_eq!(s.totp("a").await.unwrap().unwrap().last_used_step, 6);
        assert!(s.delete_totp("a").await.unwrap());
        assert!(s.totp("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn ceremonies_are_single_use_and_expire() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        s.put_ceremony("k", "v".into(), 100).await.unwrap();
        assert_eq!(
            s.take_ceremony("k", 50).await.unwrap().as_deref(),
            Some("v")
        );
        assert_eq!(s.take_ceremony("k", 50).await.unwrap(), None);
        s.put_ceremony("k", "v".into(), 100).await.unwrap();
        assert_eq!(s.take_ceremony("k", 100).await.unwrap(), None, "expired");
        // Bounded: a flood keeps only the newest MAX_CEREMONIES.
        for i in 0..(MAX_CEREMONIES + 5) {
            s.put_ceremony(&format!("f{i}"), String::new(), 100_000 + i / 10)
                .await
                .unwrap();
        }
        let n: i64 =
            s.db.call(|c| c.query_row("SELECT count(*) FROM ceremonies", [], |r| r.get(0)))
                .await
                .unwrap();
        assert_eq!(n, MAX_CEREMONIES);
        assert!(
            s.take_ceremony("f0", 0).await.unwrap().is_none(),
            "oldest dropped"
        );
        assert!(
            s.take_ceremony(&format!("f{}", MAX_CEREMONIES + 4), 0)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn passkeys_per_user() {
        let s = LocalStore::with_db(Db::memory().unwrap()).unwrap();
        let pk = |id: &str, user: &str| PasskeyRecord {
            credential_id: id.into(),
            username: user.into(),
            name: id.into(),
            created: 1,
            last_used: None,
            passkey: serde_json::json!({}),
        };
        s.save_passkey(pk("c1", "a")).await.unwrap();
        s.save_passkey(pk("c2", "a")).await.unwrap();
        s.save_passkey(pk("c3", "b")).await.unwrap();
        let ids: Vec<_> = s
            .passkeys("a")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.credential_id)
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        assert_eq!(s.passkey("c3").await.unwrap().unwrap().username, "b");
        assert!(!s.delete_passkey("a", "c3").await.unwrap(), "not a's");
        assert!(s.delete_passkey("a", "c1").await.unwrap());
        assert_eq!(s.passkeys("a").await.unwrap().len(), 1);
    }
}
