//! The shared store: every piece of mutable state in Redis (or Valkey), so several
//! `halos-authd` instances behind a load balancer act as one.
//!
//! No local cache: every session lookup is one `GET` (sub-millisecond on a LAN), so a logout
//! or revocation on any instance is seen by all at once. Expiring records carry Redis TTLs;
//! changes that touch several keys, and every check-and-set (code redemption, refresh
//! rotation), run as one Lua script, so they are atomic across instances.
//!
//! Needs Redis ≥ 7.0 or Valkey (`EXPIRETIME`), standalone (scripts touch index members'
//! keys, which Redis Cluster would refuse).
//!
//! Layout (all under a prefix, `halos-authd:` by default):
//! - `session:<hex key>` session JSON, expiring at its deadline; `user_sessions:<user>` the
//!   keys of a user's sessions; `sessions` a sorted set key → deadline (counts, sweeping)
//! - `fail:<kind>:<subject>` sorted set of failure times; `ban:<kind>:<subject>` until
//! - `subject:<user>` the OIDC `sub`
//! - `code:<hex hash>` hash {data, used}; `token:<hex hash>` hash {data, used, revoked};
//!   `family:<family>`, `user_tokens:<user>` sets of token hashes; `consent:<user>:<client>`
//! - `api_token:<id>` hash {data, last_used}; `api_tokens`, `user_api_tokens:<user>` sets of
//!   ids; `login_code:<hex hash>` (taken with `GETDEL`); `user_login_codes:<user>`
//! - `totp:<user>` hash {data, last_used_step}; `passkey:<credential id>`;
//!   `user_passkeys:<user>` sorted by first save (`passkey_seq`); `ceremony:<key>`, with
//!   `ceremonies` (by end time) to cap their number
//!
//! A `:` or `%` inside a name is escaped (`%3A`, `%25`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{
    ApiToken, BanKind, Consent, LoginCode, PasskeyRecord, Redemption, Rotation, Session,
    SessionKey, StepUse, Store, StoreError, StoredCode, TokenHash, TokenKind, TokenRecord,
    TotpRecord,
};
use crate::config::{RedisConfig, SessionConfig};

/// Where the daemon's keys live in the Redis database.
pub const KEY_PREFIX: &str = "halos-authd:";
/// Connecting and each command give up after this: requests must not hang on a dead Redis.
const IO_TIMEOUT: Duration = Duration::from_millis(1500);
/// A whole store operation (including a reconnection attempt) never takes longer.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Codes and tokens are kept this long past their end, to recognise replays.
const REPLAY_MARGIN: i64 = 86_400;
/// Activity is written back at most this often per session (the hot path stays a read).
pub const TOUCH_PERSIST_AFTER: i64 = 15;
/// Pending WebAuthn/TOTP ceremonies kept at most (as in the local store).
const MAX_CEREMONIES: i64 = 10_000;
/// While Redis is unreachable, one log line per this period, not one per request.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Session lifetimes, for the TTLs of session records (from `session.*`, follows reloads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetimes {
    pub inactivity: i64,
    pub expiration: i64,
    pub remember_me: i64,
}

impl SessionLifetimes {
    pub fn from_config(c: &SessionConfig) -> Self {
        SessionLifetimes {
            inactivity: c.inactivity.as_secs() as i64,
            expiration: c.expiration.as_secs() as i64,
            remember_me: c.remember_me.as_secs() as i64,
        }
    }

    /// When `s` ends unless touched again (the same rule as the session check).
    pub fn deadline(&self, s: &Session) -> i64 {
        if s.remember_me {
            s.created + self.remember_me
        } else {
            (s.created + self.expiration).min(s.last_activity + self.inactivity)
        }
    }
}

/// Reachability of Redis, for the health check and for rate-limited log lines.
#[derive(Default)]
struct Health {
    failing: AtomicBool,
    failures_since_log: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl Health {
    fn ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            let n = self.failures_since_log.swap(0, Ordering::Relaxed);
            tracing::warn!(
                failed_operations = n,
                "Redis is reachable again: shared state available"
            );
        }
    }

    fn failed(&self, e: &StoreError) {
        self.failing.store(true, Ordering::Relaxed);
        let n = self.failures_since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            self.failures_since_log.store(0, Ordering::Relaxed);
            tracing::error!(error = %e, failed_operations = n, "Redis unreachable: sessions and logins fail closed until it is back (logged at most every {}s)", LOG_EVERY.as_secs());
        }
    }
}

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    lifetimes: ArcSwap<SessionLifetimes>,
    /// `sub` per user: never changes once made.
    subjects: RwLock<HashMap<String, String>>,
    health: Health,
    scripts: Scripts,
    /// An API token's stored use time as this instance last saw it (saves a round trip per use).
    api_token_touched: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

struct Scripts {
    save_session: Script,
    touch_session: Script,
    delete_user_sessions: Script,
    redeem_code: Script,
    save_token: Script,
    rotate_refresh: Script,
    revoke_token: Script,
    revoke_set: Script,
    save_api_token: Script,
    touch_api_token: Script,
    delete_members: Script,
    save_login_code: Script,
    use_totp_step: Script,
    save_passkey: Script,
    delete_passkey: Script,
    put_ceremony: Script,
}

/// Adds `ARGV[at]` as member `ARGV[member]` of set `KEYS[k]` and makes the set live at least
/// until `ARGV[at]` (an index never outlives nor undercuts its members by much).
const INDEX_ADD: &str = r"
local function index_add(k, member, at)
  redis.call('SADD', k, member)
  if redis.call('EXPIRETIME', k) < tonumber(at) then redis.call('EXPIREAT', k, at) end
end
";

impl Scripts {
    fn new() -> Self {
        let with_index = |body: &str| Script::new(&format!("{INDEX_ADD}{body}"));
        Scripts {
            // KEYS: session, user set, all-sessions zset. ARGV: data, deadline, member.
            save_session: with_index(
                r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
index_add(KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
return 1",
            ),
            // Same keys; only while the session still exists (a concurrent logout wins).
            touch_session: with_index(
                r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
index_add(KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[3])
return 1",
            ),
            // KEYS: user set, all-sessions zset. ARGV: session key prefix.
            delete_user_sessions: Script::new(
                r"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. m)
  redis.call('ZREM', KEYS[2], m)
end
redis.call('DEL', KEYS[1])
return n",
            ),
            // KEYS: code. Returns nil (unknown) or {times redeemed, data}.
            redeem_code: Script::new(
                r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('HINCRBY', KEYS[1], 'used', 1)
return {n, redis.call('HGET', KEYS[1], 'data')}",
            ),
            // KEYS: token, family set, user set. ARGV: data, used, revoked, expire at, member.
            save_token: with_index(
                r"
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'used', ARGV[2], 'revoked', ARGV[3])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
index_add(KEYS[2], ARGV[5], ARGV[4])
index_add(KEYS[3], ARGV[5], ARGV[4])
return 1",
            ),
            // KEYS: old token, new token, family set, user set. ARGV: as save_token for the new one.
            rotate_refresh: with_index(
                r"
local st = redis.call('HMGET', KEYS[1], 'used', 'revoked')
if not st[1] or st[2] == '1' then return 'invalid' end
if st[1] == '1' then return 'reused' end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HSET', KEYS[2], 'data', ARGV[1], 'used', ARGV[2], 'revoked', ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[4])
index_add(KEYS[3], ARGV[5], ARGV[4])
index_add(KEYS[4], ARGV[5], ARGV[4])
return 'rotated'",
            ),
            // KEYS: token. Returns {data, used, revoked} after revoking, or nil.
            revoke_token: Script::new(
                r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSET', KEYS[1], 'revoked', '1')
return redis.call('HMGET', KEYS[1], 'data', 'used', 'revoked')",
            ),
            // KEYS: a set of token hashes. ARGV: token key prefix. Returns how many were revoked now.
            revoke_set: Script::new(
                r"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. m
  local r = redis.call('HGET', k, 'revoked')
  if r and r ~= '1' then
    redis.call('HSET', k, 'revoked', '1')
    n = n + 1
  end
end
return n",
            ),
            // KEYS: token, all-tokens set, user set. ARGV: data, expires at (0: never), id.
            save_api_token: Script::new(
                r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'data', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1",
            ),
            // KEYS: token. ARGV: now, persist-after. Writes the use time if it is stale;
            // returns the stored use time (0: no such token).
            touch_api_token: Script::new(
                r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_used') or '0')
if tonumber(ARGV[1]) - last < tonumber(ARGV[2]) then return last end
redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
return tonumber(ARGV[1])",
            ),
            // KEYS: a set of ids, optionally a second set to drop them from.
            // ARGV: record key prefix. Deletes the records; returns how many existed.
            delete_members: Script::new(
                r"
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  n = n + redis.call('DEL', ARGV[1] .. m)
  if KEYS[2] then redis.call('SREM', KEYS[2], m) end
end
redis.call('DEL', KEYS[1])
return n",
            ),
            // KEYS: registration. ARGV: step. Compare-and-set of the last used step.
            use_totp_step: Script::new(
                r"
local last = redis.call('HGET', KEYS[1], 'last_used_step')
if not last then return 'not_enrolled' end
if tonumber(ARGV[1]) <= tonumber(last) then return 'replayed' end
redis.call('HSET', KEYS[1], 'last_used_step', ARGV[1])
return 'accepted'",
            ),
            // KEYS: passkey, the user's passkeys (sorted by first save), sequence counter.
            // ARGV: data, credential id. A credential id of another user is refused.
            save_passkey: Script::new(
                r"
if redis.call('EXISTS', KEYS[1]) == 1 and not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[2])
end
return 1",
            ),
            // KEYS: passkey, the user's passkeys. ARGV: credential id. Only the owner's.
            delete_passkey: Script::new(
                r"
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])",
            ),
            // KEYS: ceremony, index of all ceremonies (by end). ARGV: value, expires at, cap.
            // Bounded like the local store: beyond the cap the oldest go, so a flood of
            // unauthenticated starts cannot fill Redis.
            put_ceremony: Script::new(
                r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - 3600)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, k in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do redis.call('DEL', k) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 1",
            ),
            // KEYS: code, user set. ARGV: data, expires at, member.
            save_login_code: with_index(
                r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
index_add(KEYS[2], ARGV[3], ARGV[2])
return 1",
            ),
        }
    }
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(redis_err)`
fn redis_err(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(json_err)`
fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Io(format!("stored record: {e}"))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(json_err)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(json_err)
}

fn flag(v: Option<&str>) -> bool {
    v == Some("1")
}

fn bit(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// A token record from its hash fields (`data`, `used`, `revoked`).
fn token_from_fields(
    data: Option<String>,
    used: Option<&str>,
    revoked: Option<&str>,
) -> Result<Option<TokenRecord>, StoreError> {
    let Some(data) = data else {
        return Ok(None);
    };
    let mut t: TokenRecord = from_json(&data)?;
    t.used = flag(used);
    t.revoked = flag(revoked);
    Ok(Some(t))
}

impl RedisStore {
    /// A client for `cfg` (URL, then `password` and `database_index` when set). Does not
    /// connect: the daemon starts (not ready) while Redis is down and connects when it is up.
    pub fn connect(
        cfg: &RedisConfig,
        lifetimes: SessionLifetimes,
        prefix: &str,
    ) -> Result<RedisStore, StoreError> {
        use redis::IntoConnectionInfo;
        let mut info = cfg
            .url
            .expose()
            .into_connection_info()
            .map_err(|e| StoreError::Io(format!("storage.redis.url: {:?}", e.kind())))?;
        let mut settings = info.redis_settings().clone();
        if let Some(p) = &cfg.password {
            settings = settings.set_password(p.expose());
        }
        if let Some(db) = cfg.database_index {
            settings = settings.set_db(i64::from(db));
        }
        info = info.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(redis_err)?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(IO_TIMEOUT))
            .set_response_timeout(Some(IO_TIMEOUT))
            // A reconnection is tried on the next use; no long retry loops inside a request.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn =
            ConnectionManager::new_lazy_with_config(client, manager_cfg).map_err(redis_err)?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_string(),
            lifetimes: ArcSwap::from_pointee(lifetimes),
            subjects: RwLock::new(HashMap::new()),
            health: Health::default(),
            scripts: Scripts::new(),
            api_token_touched: Mutex::new(HashMap::new()),
        })
    }

    /// Pings Redis every second in the background, so an outage shows in the health check
    /// and the log even without traffic, and the connection is rebuilt as soon as Redis is
    /// back rather than on the first request after it.
    pub fn spawn_monitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else {
                    return;
                };
                let _ = store.ping().await;
            }
        });
    }

    /// New session lifetimes (config reload): used for records written from now on.
    pub fn set_lifetimes(&self, l: SessionLifetimes) {
        self.lifetimes.store(Arc::new(l));
    }

    /// `prefix` + parts joined by `:`; a `:` inside a part (a user or client name) is escaped,
    /// so `consent:a:b:c` cannot mean two different user/client pairs.
    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(&p.replace('%', "%25").replace(':', "%3A"));
        }
        k
    }

    fn session_key(&self, key: &SessionKey) -> String {
        self.key(&["session", &hex::encode(key)])
    }

    fn token_key(&self, hash: &TokenHash) -> String {
        self.key(&["token", &hex::encode(hash)])
    }

    fn all_sessions_key(&self) -> String {
        self.key(&["sessions"])
    }

    /// Runs one Redis operation with a deadline, recording reachability.
    async fn run<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let res = match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(redis_err(e)),
            Err(_) => Err(StoreError::Redis(format!(
                "no answer within {}s",
                OP_TIMEOUT.as_secs()
            ))),
        };
        match &res {
            Ok(_) => self.health.ok(),
            Err(e) => self.health.failed(e),
        }
        res
    }

    /// `PING`: whether Redis answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn.clone();
        self.run(async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .map(|_| ())
    }

    /// Sessions not yet past their deadline at `now`.
    pub async fn live_sessions(&self, now: i64) -> Result<usize, StoreError> {
        let mut c = self.conn.clone();
        let k = self.all_sessions_key();
        self.run(async move { c.zcount::<_, _, _, usize>(&k, now, "+inf").await })
            .await
    }

    /// Forgets index entries of sessions that expired (their records expire by TTL).
    pub async fn purge(&self, now: i64) -> Result<usize, StoreError> {
        let mut c = self.conn.clone();
        let k = self.all_sessions_key();
        self.run(async move { c.zrembyscore::<_, _, _, usize>(&k, "-inf", now - 1).await })
            .await
    }

    async fn write_session(&self, s: &Session, touch: bool) -> Result<bool, StoreError> {
        let deadline = self.lifetimes.load().deadline(s).max(s.last_activity + 1);
        let member = hex::encode(s.key);
        let script = if touch {
            &self.scripts.touch_session
        } else {
            &self.scripts.save_session
        };
        let mut inv = script.prepare_invoke();
        inv.key(self.session_key(&s.key))
            .key(self.key(&["user_sessions", &s.username]))
            .key(self.all_sessions_key())
            .arg(to_json(s)?)
            .arg(deadline)
            .arg(member);
        let mut c = self.conn.clone();
        let n: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(n == 1)
    }

    async fn save_token_record(&self, hash: &TokenHash, t: &TokenRecord) -> Result<(), StoreError> {
        let mut inv = self.scripts.save_token.prepare_invoke();
        inv.key(self.token_key(hash))
            .key(self.key(&["family", &t.family]))
            .key(self.key(&["user_tokens", &t.grant.username]))
            .arg(to_json(t)?)
            .arg(bit(t.used))
            .arg(bit(t.revoked))
            .arg(t.grant.expires_at + REPLAY_MARGIN)
            .arg(hex::encode(hash));
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    fn api_token_key(&self, id: &str) -> String {
        self.key(&["api_token", id])
    }

    fn api_token_from_fields(
        data: Option<String>,
        last_used: Option<i64>,
    ) -> Result<Option<ApiToken>, StoreError> {
        let Some(data) = data else {
            return Ok(None);
        };
        let mut t: ApiToken = from_json(&data)?;
        if last_used.is_some() {
            t.last_used = t.last_used.max(last_used);
        }
        Ok(Some(t))
    }

    async fn revoke_set(&self, set: String) -> Result<u32, StoreError> {
        let mut inv = self.scripts.revoke_set.prepare_invoke();
        inv.key(set).arg(self.key(&["token", ""]));
        let mut c = self.conn.clone();
        self.run(async move { inv.invoke_async(&mut c).await })
            .await
    }
}

impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        RedisStore::ping(self).await
    }

    async fn totp(&self, username: &str) -> Result<Option<TotpRecord>, StoreError> {
        let k = self.key(&["totp", username]);
        let mut c = self.conn.clone();
        let (data, step): (Option<String>, Option<u64>) = self
            .run(async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg("data")
                    .arg("last_used_step")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(data) = data else {
            return Ok(None);
        };
        let mut r: TotpRecord = from_json(&data)?;
        r.last_used_step = step.unwrap_or(r.last_used_step);
        Ok(Some(r))
    }

    async fn save_totp(&self, username: &str, record: TotpRecord) -> Result<(), StoreError> {
        let k = self.key(&["totp", username]);
        let data = to_json(&record)?;
        let step = record.last_used_step;
        let mut c = self.conn.clone();
        self.run(async move {
            redis::pipe()
                .atomic()
                .del(&k)
                .ignore()
                .hset_multiple(&k, &[("data", data), ("last_used_step", step.to_string())])
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn delete_totp(&self, username: &str) -> Result<bool, StoreError> {
        let k = self.key(&["totp", username]);
        let mut c = self.conn.clone();
        let n: u32 = self.run(async move { c.del(&k).await }).await?;
        Ok(n > 0)
    }

    async fn use_totp_step(&self, username: &str, step: u64) -> Result<StepUse, StoreError> {
        let mut inv = self.scripts.use_totp_step.prepare_invoke();
        inv.key(self.key(&["totp", username])).arg(step);
        let mut c = self.conn.clone();
        let r: String = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(match r.as_str() {
            "accepted" => StepUse::Accepted,
            "replayed" => StepUse::Replayed,
            _ => StepUse::NotEnrolled,
        })
    }

    async fn passkeys(&self, username: &str) -> Result<Vec<PasskeyRecord>, StoreError> {
        let set = self.key(&["user_passkeys", username]);
        let mut c = self.conn.clone();
        let ids: Vec<String> = self.run(async move { c.zrange(&set, 0, -1).await }).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(p) = self.passkey(&id).await?
                && p.username == username
            {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn passkey(&self, credential_id: &str) -> Result<Option<PasskeyRecord>, StoreError> {
        let k = self.key(&["passkey", credential_id]);
        let mut c = self.conn.clone();
        let d: Option<String> = self.run(async move { c.get(&k).await }).await?;
        d.map(|d| from_json(&d)).transpose()
    }

    async fn save_passkey(&self, record: PasskeyRecord) -> Result<(), StoreError> {
        let mut inv = self.scripts.save_passkey.prepare_invoke();
        inv.key(self.key(&["passkey", &record.credential_id]))
            .key(self.key(&["user_passkeys", &record.username]))
            .key(self.key(&["passkey_seq"]))
            .arg(to_json(&record)?)
            .arg(&record.credential_id);
        let mut c = self.conn.clone();
        let saved: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        if saved == 1 {
            Ok(())
        } else {
            Err(StoreError::Io(
                "a passkey with this credential id belongs to another user".into(),
            ))
        }
    }

    async fn delete_passkey(
        &self,
        username: &str,
        credential_id: &str,
    ) -> Result<bool, StoreError> {
        let mut inv = self.scripts.delete_passkey.prepare_invoke();
        inv.key(self.key(&["passkey", credential_id]))
            .key(self.key(&["user_passkeys", username]))
            .arg(credential_id);
        let mut c = self.conn.clone();
        let n: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(n > 0)
    }

    async fn put_ceremony(&self, key: &str, data: String, expires: i64) -> Result<(), StoreError> {
        // Redis expires it; the end time travels with the data for the check on take.
        let mut inv = self.scripts.put_ceremony.prepare_invoke();
        inv.key(self.key(&["ceremony", key]))
            .key(self.key(&["ceremonies"]))
            .arg(format!("{expires}\n{data}"))
            .arg(expires)
            .arg(MAX_CEREMONIES);
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn take_ceremony(&self, key: &str, now: i64) -> Result<Option<String>, StoreError> {
        let k = self.key(&["ceremony", key]);
        let all = self.key(&["ceremonies"]);
        let mut c = self.conn.clone();
        let (v,): (Option<String>,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .cmd("GETDEL")
                    .arg(&k)
                    .zrem(&all, &k)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(v.and_then(|v| {
            let (expires, data) = v.split_once('\n')?;
            let expires: i64 = expires.parse().ok()?;
            (now < expires).then(|| data.to_string())
        }))
    }

    async fn api_token(&self, id: &str) -> Result<Option<Arc<ApiToken>>, StoreError> {
        let k = self.api_token_key(id);
        let mut c = self.conn.clone();
        let (data, last_used): (Option<String>, Option<i64>) = self
            .run(async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg("data")
                    .arg("last_used")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(Self::api_token_from_fields(data, last_used)?.map(Arc::new))
    }

    async fn api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let all = self.key(&["api_tokens"]);
        let mut c = self.conn.clone();
        let ids: Vec<String> = self.run(async move { c.smembers(&all).await }).await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for id in ids {
            match self.api_token(&id).await? {
                Some(t) => out.push((*t).clone()),
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            // Expired by TTL: forget them in the index too.
            let all = self.key(&["api_tokens"]);
            let mut c = self.conn.clone();
            let _: () = self.run(async move { c.srem(&all, gone).await }).await?;
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    async fn save_api_token(&self, token: ApiToken) -> Result<(), StoreError> {
        let mut inv = self.scripts.save_api_token.prepare_invoke();
        inv.key(self.api_token_key(&token.id))
            .key(self.key(&["api_tokens"]))
            .key(self.key(&["user_api_tokens", &token.username]))
            .arg(to_json(&token)?)
            .arg(token.expires.unwrap_or(0).max(0))
            .arg(&token.id);
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn delete_api_token(&self, id: &str) -> Result<bool, StoreError> {
        let k = self.api_token_key(id);
        let all = self.key(&["api_tokens"]);
        let id = id.to_string();
        let mut c = self.conn.clone();
        let (n,): (u32,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .del(&k)
                    .srem(&all, id)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(n > 0)
    }

    async fn delete_user_api_tokens(&self, username: &str) -> Result<u32, StoreError> {
        let mut inv = self.scripts.delete_members.prepare_invoke();
        inv.key(self.key(&["user_api_tokens", username]))
            .key(self.key(&["api_tokens"]))
            .arg(self.key(&["api_token", ""]));
        let mut c = self.conn.clone();
        self.run(async move { inv.invoke_async(&mut c).await })
            .await
    }

    async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let seen = self
            .api_token_touched
            .lock()
            .map_err(|_| StoreError::Unavailable)?
            .get(id)
            .copied();
        if seen.is_some_and(|t| now - t < TOUCH_PERSIST_AFTER) {
            return Ok(());
        }
        let mut inv = self.scripts.touch_api_token.prepare_invoke();
        inv.key(self.api_token_key(id))
            .arg(now)
            .arg(TOUCH_PERSIST_AFTER);
        let mut c = self.conn.clone();
        let stored: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        let mut m = self
            .api_token_touched
            .lock()
            .map_err(|_| StoreError::Unavailable)?;
        if m.len() > 10_000 {
            m.clear();
        }
        if stored > 0 {
            m.insert(id.to_string(), stored);
        }
        Ok(())
    }

    async fn save_login_code(&self, hash: TokenHash, code: LoginCode) -> Result<(), StoreError> {
        let mut inv = self.scripts.save_login_code.prepare_invoke();
        inv.key(self.key(&["login_code", &hex::encode(hash)]))
            .key(self.key(&["user_login_codes", &code.username]))
            .arg(to_json(&code)?)
            .arg(code.expires.max(code.created + 1))
            .arg(hex::encode(hash));
        let mut c = self.conn.clone();
        let _: i64 = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    async fn take_login_code(
        &self,
        hash: TokenHash,
        now: i64,
    ) -> Result<Option<LoginCode>, StoreError> {
        // GETDEL: whoever removes it owns it, on any instance.
        let k = self.key(&["login_code", &hex::encode(hash)]);
        let mut c = self.conn.clone();
        let data: Option<String> = self
            .run(async move { redis::cmd("GETDEL").arg(&k).query_async(&mut c).await })
            .await?;
        let code: Option<LoginCode> = data.map(|d| from_json(&d)).transpose()?;
        Ok(code.filter(|code| now < code.expires))
    }

    async fn delete_user_login_codes(&self, username: &str) -> Result<u32, StoreError> {
        let mut inv = self.scripts.delete_members.prepare_invoke();
        inv.key(self.key(&["user_login_codes", username]))
            .arg(self.key(&["login_code", ""]));
        let mut c = self.conn.clone();
        self.run(async move { inv.invoke_async(&mut c).await })
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
        let k = self.key(&["subject", username]);
        let mut c = self.conn.clone();
        // First writer wins; everyone then reads the winner's value.
        let sub: String = self
            .run(async move {
                let _: bool = c.set_nx(&k, fresh).await?;
                c.get(&k).await
            })
            .await?;
        self.subjects
            .write()
            .map_err(|_| StoreError::Unavailable)?
            .insert(username.to_string(), sub.clone());
        Ok(sub)
    }

    async fn save_code(&self, hash: TokenHash, code: StoredCode) -> Result<(), StoreError> {
        let k = self.key(&["code", &hex::encode(hash)]);
        let data = to_json(&code)?;
        let at = code.grant.expires_at + REPLAY_MARGIN;
        let mut c = self.conn.clone();
        self.run(async move {
            redis::pipe()
                .atomic()
                .hset_multiple(&k, &[("data", data.as_str()), ("used", "0")])
                .ignore()
                .expire_at(&k, at)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn redeem_code(&self, hash: TokenHash, now: i64) -> Result<Redemption, StoreError> {
        let mut inv = self.scripts.redeem_code.prepare_invoke();
        inv.key(self.key(&["code", &hex::encode(hash)]));
        let mut c = self.conn.clone();
        let r: Option<(i64, String)> = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        let Some((times, data)) = r else {
            return Ok(Redemption::Unknown);
        };
        let code: StoredCode = from_json(&data)?;
        if times > 1 {
            return Ok(Redemption::Replayed {
                family: code.family,
            });
        }
        if now >= code.grant.expires_at {
            return Ok(Redemption::Unknown);
        }
        Ok(Redemption::Fresh(code))
    }

    async fn save_token(&self, hash: TokenHash, token: TokenRecord) -> Result<(), StoreError> {
        self.save_token_record(&hash, &token).await
    }

    async fn token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let k = self.token_key(&hash);
        let mut c = self.conn.clone();
        let (data, used, revoked): (Option<String>, Option<String>, Option<String>) = self
            .run(async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg("data")
                    .arg("used")
                    .arg("revoked")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        token_from_fields(data, used.as_deref(), revoked.as_deref())
    }

    async fn rotate_refresh(
        &self,
        old: TokenHash,
        new: TokenHash,
        new_token: TokenRecord,
        now: i64,
    ) -> Result<Rotation, StoreError> {
        let Some(mut cur) = self.token(old).await? else {
            return Ok(Rotation::Invalid);
        };
        if cur.kind != TokenKind::Refresh || cur.revoked || now >= cur.grant.expires_at {
            return Ok(Rotation::Invalid);
        }
        let mut inv = self.scripts.rotate_refresh.prepare_invoke();
        inv.key(self.token_key(&old))
            .key(self.token_key(&new))
            .key(self.key(&["family", &new_token.family]))
            .key(self.key(&["user_tokens", &new_token.grant.username]))
            .arg(to_json(&new_token)?)
            .arg(bit(new_token.used))
            .arg(bit(new_token.revoked))
            .arg(new_token.grant.expires_at + REPLAY_MARGIN)
            .arg(hex::encode(new));
        let mut c = self.conn.clone();
        let outcome: String = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        match outcome.as_str() {
            "rotated" => {
                cur.used = true;
                Ok(Rotation::Rotated(cur))
            }
            "reused" => {
                // Someone holds a copy of a rotated token: the whole family goes.
                self.revoke_family(&cur.family).await?;
                Ok(Rotation::Reused)
            }
            _ => Ok(Rotation::Invalid),
        }
    }

    async fn revoke_token(&self, hash: TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let mut inv = self.scripts.revoke_token.prepare_invoke();
        inv.key(self.token_key(&hash));
        let mut c = self.conn.clone();
        let r: Option<(Option<String>, Option<String>, Option<String>)> = self
            .run(async move { inv.invoke_async(&mut c).await })
            .await?;
        match r {
            Some((d, u, rv)) => token_from_fields(d, u.as_deref(), rv.as_deref()),
            None => Ok(None),
        }
    }

    async fn revoke_family(&self, family: &str) -> Result<u32, StoreError> {
        self.revoke_set(self.key(&["family", family])).await
    }

    async fn revoke_user_tokens(&self, username: &str) -> Result<u32, StoreError> {
        self.revoke_set(self.key(&["user_tokens", username])).await
    }

    async fn consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<Consent>, StoreError> {
        let k = self.key(&["consent", username, client_id]);
        let mut c = self.conn.clone();
        let d: Option<String> = self.run(async move { c.get(&k).await }).await?;
        d.map(|d| from_json(&d)).transpose()
    }

    async fn save_consent(
        &self,
        username: &str,
        client_id: &str,
        consent: Consent,
    ) -> Result<(), StoreError> {
        let k = self.key(&["consent", username, client_id]);
        let data = to_json(&consent)?;
        let at = consent.expires;
        let mut c = self.conn.clone();
        self.run(async move {
            redis::pipe()
                .atomic()
                .set(&k, data)
                .ignore()
                .expire_at(&k, at)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn session(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let k = self.session_key(key);
        let mut c = self.conn.clone();
        let d: Option<String> = self.run(async move { c.get(&k).await }).await?;
        d.map(|d| from_json(&d).map(Arc::new)).transpose()
    }

    async fn save_session(&self, s: Session) -> Result<(), StoreError> {
        self.write_session(&s, false).await.map(|_| ())
    }

    async fn touch_session(&self, s: &Session, now: i64) -> Result<(), StoreError> {
        if now - s.last_activity < TOUCH_PERSIST_AFTER {
            return Ok(());
        }
        let mut updated = s.clone();
        updated.last_activity = now;
        self.write_session(&updated, true).await.map(|_| ())
    }

    async fn delete_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        let k = self.session_key(key);
        let all = self.all_sessions_key();
        let member = hex::encode(key);
        let mut c = self.conn.clone();
        self.run(async move {
            redis::pipe()
                .atomic()
                .del(&k)
                .ignore()
                .zrem(&all, member)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn delete_user_sessions(&self, username: &str) -> Result<u32, StoreError> {
        let mut inv = self.scripts.delete_user_sessions.prepare_invoke();
        inv.key(self.key(&["user_sessions", username]))
            .key(self.all_sessions_key())
            .arg(self.key(&["session", ""]));
        let mut c = self.conn.clone();
        self.run(async move { inv.invoke_async(&mut c).await })
            .await
    }

    async fn delete_stale_sessions(&self, username: &str, keep: u64) -> Result<u32, StoreError> {
        // Read, decide here (the fingerprint is a u64: no Lua numbers), delete by key.
        let set = self.key(&["user_sessions", username]);
        let mut c = self.conn.clone();
        let members: Vec<String> = {
            let set = set.clone();
            self.run(async move { c.smembers(&set).await }).await?
        };
        let mut stale = Vec::new();
        for m in members {
            let Ok(raw) = hex::decode(&m) else { continue };
            let Ok(key) = <SessionKey>::try_from(raw.as_slice()) else {
                continue;
            };
            match self.session(&key).await? {
                Some(s) if s.username == username && s.pw_fingerprint == keep => {}
                _ => stale.push(m),
            }
        }
        if stale.is_empty() {
            return Ok(0);
        }
        let all = self.all_sessions_key();
        let keys: Vec<String> = stale.iter().map(|m| self.key(&["session", m])).collect();
        let mut c = self.conn.clone();
        let (n,): (u32,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .del(&keys)
                    .zrem(&all, &stale)
                    .ignore()
                    .srem(&set, &stale)
                    .ignore()
                    .query_async(&mut c)
                    .await
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
        let k = self.key(&["fail", kind.as_str(), subject]);
        let mut nonce = [0u8; 8];
        crate::users::hash::random_bytes(&mut nonce);
        let member = format!("{now}:{}", hex::encode(nonce));
        let mut c = self.conn.clone();
        let (n,): (u32,) = self
            .run(async move {
                redis::pipe()
                    .atomic()
                    .zadd(&k, member, now)
                    .ignore()
                    // Keep failures within the window, and at most the latest 64.
                    .zrembyscore(&k, "-inf", format!("({}", now - window))
                    .ignore()
                    .zremrangebyrank(&k, 0, -65)
                    .ignore()
                    .zcard(&k)
                    .expire(&k, window + 1)
                    .ignore()
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(n)
    }

    async fn clear_failures(&self, kind: BanKind, subject: &str) -> Result<(), StoreError> {
        let k = self.key(&["fail", kind.as_str(), subject]);
        let mut c = self.conn.clone();
        self.run(async move { c.del::<_, ()>(&k).await }).await
    }

    async fn ban(&self, kind: BanKind, subject: &str, until: i64) -> Result<(), StoreError> {
        let k = self.key(&["ban", kind.as_str(), subject]);
        let mut c = self.conn.clone();
        self.run(async move {
            redis::pipe()
                .atomic()
                .set(&k, until)
                .ignore()
                .expire_at(&k, until)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn banned_until(
        &self,
        kind: BanKind,
        subject: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let k = self.key(&["ban", kind.as_str(), subject]);
        let mut c = self.conn.clone();
        let until: Option<i64> = self.run(async move { c.get(&k).await }).await?;
        Ok(until.filter(|u| *u > now))
    }
}

/// A real `redis-server` for tests: its own temp dir and free port, gone on drop.
#[cfg(test)]
pub(crate) mod test_server {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};

    pub struct TestRedis {
        child: Child,
        _dir: tempfile::TempDir,
        pub port: u16,
    }

    impl TestRedis {
        pub fn start() -> TestRedis {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            Self::start_on(port)
        }

        /// On a given port (a restart where clients already point).
        pub fn start_on(port: u16) -> TestRedis {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::piped())
                .spawn()
                .expect("redis-server (apt install redis-server)");
            // Its log says when it accepts connections; keep draining it afterwards.
            let mut log = BufReader::new(child.stdout.take().expect("stdout"));
            let mut line = String::new();
            loop {
                line.clear();
                let n = log.read_line(&mut line).expect("redis-server log");
                assert!(n > 0, "redis-server exited before it was ready");
                if line.contains("Ready to accept connections") {
                    break;
                }
            }
            std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
            let r = TestRedis {
                child,
                _dir: dir,
                port,
            };
            r.ping();
            r
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        /// `PING` answers `PONG`.
        fn ping(&self) {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").expect("PING");
            s.read_exact(&mut buf).expect("PONG");
            assert_eq!(&buf, b"+PONG\r\n");
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::TestRedis;
    use super::*;
    use crate::config::RedisConfig;
    use crate::secret::SecretUrl;
    use crate::store::AuthLevel;

    const DAY: i64 = 86_400;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn lifetimes() -> SessionLifetimes {
        SessionLifetimes {
            inactivity: 300,
            expiration: 3600,
            remember_me: 30 * DAY,
        }
    }

    fn store_at(url: &str) -> RedisStore {
        let cfg = RedisConfig {
            url: SecretUrl::new(url),
            password: None,
            database_index: None,
        };
        RedisStore::connect(&cfg, lifetimes(), KEY_PREFIX).unwrap()
    }

    async fn ttl(r: &TestRedis, key: &str) -> i64 {
        let client = redis::Client::open(r.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        c.ttl(key).await.unwrap()
    }

    fn session(n: u8, user: &str, t: i64) -> Session {
        Session {
            key: [n; 32],
            username: user.into(),
            level: AuthLevel::OneFactor,
            cookie_domain: "halos.local".into(),
            created: t,
            last_activity: t,
            remember_me: false,
            auth_time: t,
            amr: vec!["pwd".into()],
            pw_fingerprint: 7,
            reauth_at: t,
            must_change_password: false,
        }
    }

    #[tokio::test]
    async fn sessions_are_shared_expire_by_ttl_and_end_per_user() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        a.save_session(session(1, "ann", t)).await.unwrap();
        a.save_session(session(2, "ann", t)).await.unwrap();
        a.save_session(session(3, "bob", t)).await.unwrap();
        // Seen by another instance; TTL from the inactivity limit.
        assert_eq!(
            *b.session(&[1; 32]).await.unwrap().unwrap(),
            session(1, "ann", t)
        );
        let k = a.session_key(&[1; 32]);
        assert!(
            (295..=300).contains(&ttl(&r, &k).await),
            "{}",
            ttl(&r, &k).await
        );
        assert_eq!(b.live_sessions(t).await.unwrap(), 3);

        // Touch: written back once stale enough, extending the TTL; a recent one is skipped.
        let s1 = session(1, "ann", t - 100);
        a.touch_session(&s1, t).await.unwrap();
        assert_eq!(b.session(&[1; 32]).await.unwrap().unwrap().last_activity, t);
        a.touch_session(&session(1, "ann", t), t + 1).await.unwrap();
        assert_eq!(b.session(&[1; 32]).await.unwrap().unwrap().last_activity, t);

        b.delete_session(&[3; 32]).await.unwrap();
        assert!(a.session(&[3; 32]).await.unwrap().is_none());
        // Touching a session that was logged out elsewhere does not bring it back.
        a.touch_session(&session(3, "bob", t - 100), t)
            .await
            .unwrap();
        assert!(a.session(&[3; 32]).await.unwrap().is_none());

        assert_eq!(b.delete_user_sessions("ann").await.unwrap(), 2);
        assert!(a.session(&[1; 32]).await.unwrap().is_none());
        assert!(a.session(&[2; 32]).await.unwrap().is_none());
        assert_eq!(a.live_sessions(t).await.unwrap(), 0);

        // Remember-me sessions live for remember_me; the index forgets expired ones.
        let mut rm = session(4, "cy", t);
        rm.remember_me = true;
        a.save_session(rm).await.unwrap();
        assert!(ttl(&r, &a.session_key(&[4; 32])).await > 29 * DAY);
        assert_eq!(a.purge(t + 31 * DAY).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn failures_count_within_the_window_and_bans_expire() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        assert_eq!(
            a.record_failure(BanKind::Ip, "1.2.3.4", t, 120)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            b.record_failure(BanKind::Ip, "1.2.3.4", t + 60, 120)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            a.record_failure(BanKind::Ip, "1.2.3.4", t + 170, 120)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            a.record_failure(BanKind::User, "1.2.3.4", t, 120)
                .await
                .unwrap(),
            1
        );
        b.clear_failures(BanKind::Ip, "1.2.3.4").await.unwrap();
        assert_eq!(
            a.record_failure(BanKind::Ip, "1.2.3.4", t + 201, 120)
                .await
                .unwrap(),
            1
        );

        a.ban(BanKind::User, "ann", t + 300).await.unwrap();
        assert_eq!(
            b.banned_until(BanKind::User, "ann", t).await.unwrap(),
            Some(t + 300)
        );
        assert_eq!(
            b.banned_until(BanKind::User, "ann", t + 300).await.unwrap(),
            None
        );
        assert_eq!(b.banned_until(BanKind::Ip, "ann", t).await.unwrap(), None);
        assert!((295..=300).contains(&ttl(&r, &a.key(&["ban", "user", "ann"])).await));
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

    fn code(family: &str, expires_at: i64) -> StoredCode {
        let g = grant(expires_at);
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
                expires_at,
            },
            family: family.into(),
        }
    }

    fn refresh(family: &str, expires_at: i64) -> TokenRecord {
        TokenRecord {
            kind: TokenKind::Refresh,
            family: family.into(),
            grant: grant(expires_at),
            issued: 1,
            used: false,
            revoked: false,
        }
    }

    #[tokio::test]
    async fn codes_are_single_use_even_when_redeemed_concurrently() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        a.save_code([1; 32], code("f1", t + 60)).await.unwrap();
        assert_eq!(
            b.redeem_code([1; 32], t).await.unwrap(),
            Redemption::Fresh(code("f1", t + 60))
        );
        assert_eq!(
            a.redeem_code([1; 32], t).await.unwrap(),
            Redemption::Replayed {
                family: "f1".into()
            }
        );
        assert_eq!(
            a.redeem_code([9; 32], t).await.unwrap(),
            Redemption::Unknown
        );
        a.save_code([2; 32], code("f2", t)).await.unwrap();
        assert_eq!(
            a.redeem_code([2; 32], t).await.unwrap(),
            Redemption::Unknown,
            "expired"
        );
        assert!(ttl(&r, &a.key(&["code", &hex::encode([2u8; 32])])).await > DAY - 10);

        // Many codes, each redeemed by both stores at once: exactly one wins each.
        for n in 10..40u8 {
            a.save_code([n; 32], code("f", t + 60)).await.unwrap();
            let (x, y) = tokio::join!(a.redeem_code([n; 32], t), b.redeem_code([n; 32], t));
            let fresh = [x.unwrap(), y.unwrap()]
                .iter()
                .filter(|r| matches!(r, Redemption::Fresh(_)))
                .count();
            assert_eq!(fresh, 1);
        }
    }

    #[tokio::test]
    async fn refresh_rotation_is_single_use_and_reuse_revokes_the_family() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        a.save_token([3; 32], refresh("f1", t + 1000))
            .await
            .unwrap();
        assert_eq!(
            b.token([3; 32]).await.unwrap().unwrap(),
            refresh("f1", t + 1000)
        );
        let Rotation::Rotated(old) = b
            .rotate_refresh([3; 32], [4; 32], refresh("f1", t + 1000), t)
            .await
            .unwrap()
        else {
            panic!("not rotated")
        };
        assert!(old.used);
        assert!(a.token([4; 32]).await.unwrap().unwrap().active(t));
        assert!(!a.token([3; 32]).await.unwrap().unwrap().active(t));
        // The old one again: reuse → the new one is revoked too.
        assert_eq!(
            a.rotate_refresh([3; 32], [5; 32], refresh("f1", t + 1000), t)
                .await
                .unwrap(),
            Rotation::Reused
        );
        assert!(b.token([4; 32]).await.unwrap().unwrap().revoked);
        assert!(b.token([5; 32]).await.unwrap().is_none());
        assert_eq!(
            a.rotate_refresh([4; 32], [6; 32], refresh("f1", t + 1000), t)
                .await
                .unwrap(),
            Rotation::Invalid
        );
        assert_eq!(
            a.rotate_refresh([8; 32], [6; 32], refresh("f1", t + 1000), t)
                .await
                .unwrap(),
            Rotation::Invalid,
            "unknown"
        );

        // Concurrent rotation of one token on two instances: one rotates, the other is reuse.
        a.save_token([20; 32], refresh("f2", t + 1000))
            .await
            .unwrap();
        let (x, y) = tokio::join!(
            a.rotate_refresh([20; 32], [21; 32], refresh("f2", t + 1000), t),
            b.rotate_refresh([20; 32], [22; 32], refresh("f2", t + 1000), t)
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Rotation::Rotated(_)))
                .count(),
            1
        );
        assert!(outcomes.contains(&Rotation::Reused));

        // Per-token, per-family and per-user revocation.
        a.save_token([30; 32], refresh("f3", t + 1000))
            .await
            .unwrap();
        a.save_token([31; 32], refresh("f3", t + 1000))
            .await
            .unwrap();
        a.save_token([32; 32], refresh("f4", t + 1000))
            .await
            .unwrap();
        assert!(b.revoke_token([30; 32]).await.unwrap().unwrap().revoked);
        assert!(b.revoke_token([99; 32]).await.unwrap().is_none());
        assert!(
            b.token([99; 32]).await.unwrap().is_none(),
            "not created by revoking"
        );
        assert_eq!(b.revoke_family("f3").await.unwrap(), 1);
        assert_eq!(
            b.revoke_user_tokens("ann").await.unwrap(),
            1,
            "only f4's is left"
        );
        assert!(a.token([32; 32]).await.unwrap().unwrap().revoked);
        let family_ttl = ttl(&r, &a.key(&["family", "f3"])).await;
        assert!(family_ttl > DAY && family_ttl <= DAY + 1000);
    }

    #[tokio::test]
    async fn subjects_are_shared_stable_and_distinct() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let (x, y) = tokio::join!(a.subject("ann"), b.subject("ann"));
        assert_eq!(x.unwrap(), y.unwrap());
        let ann = a.subject("ann").await.unwrap();
        assert_eq!(ann.len(), 32);
        assert_ne!(ann, b.subject("bob").await.unwrap());
        assert_eq!(store_at(&r.url()).subject("ann").await.unwrap(), ann);
    }

    #[tokio::test]
    async fn consents_are_shared_until_they_expire() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        assert!(b.consent("ann", "c").await.unwrap().is_none());
        let c = Consent {
            scopes: crate::oidc::Scopes::empty().with(crate::oidc::Scope::Openid),
            expires: t + 600,
        };
        a.save_consent("ann", "c", c.clone()).await.unwrap();
        assert_eq!(b.consent("ann", "c").await.unwrap(), Some(c.clone()));
        assert!(b.consent("ann", "d").await.unwrap().is_none());
        // Names with colons cannot alias another user/client pair.
        assert!(b.consent("ann:c", "x").await.unwrap().is_none());
        a.save_consent("a", "nn:c", c.clone()).await.unwrap();
        assert!(b.consent("a:nn", "c").await.unwrap().is_none());
        assert!((595..=600).contains(&ttl(&r, &a.key(&["consent", "ann", "c"])).await));
    }

    #[tokio::test]
    async fn password_and_database_index_come_from_the_config() {
        let r = TestRedis::start();
        let admin = redis::Client::open(r.url()).unwrap();
        let mut c = admin.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg("s3cret")
            .query_async(&mut c)
            .await
            .unwrap();
        let cfg = |password: Option<&str>| RedisConfig {
            url: SecretUrl::new(r.url()),
            password: password.map(crate::secret::Secret::new),
            database_index: Some(3),
        };
        let wrong = RedisStore::connect(&cfg(Some("nope")), lifetimes(), KEY_PREFIX).unwrap();
        assert!(wrong.ping().await.is_err());
        let s = RedisStore::connect(&cfg(Some("s3cret")), lifetimes(), KEY_PREFIX).unwrap();
        s.ping().await.unwrap();
        s.ban(BanKind::Ip, "x", now() + 60).await.unwrap();
        let authed =
            redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/3", r.port)).unwrap();
        let mut c3 = authed.get_multiplexed_async_connection().await.unwrap();
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut c3).await.unwrap();
        assert_eq!(n, 1, "written to database 3");
    }

    fn api_token(id: &str, user: &str, created: i64, expires: Option<i64>) -> ApiToken {
        ApiToken {
            id: id.into(),
            username: user.into(),
            name: format!("{id} script"),
            secret_hash: [7; 32],
            host: Some("*.halos.local".into()),
            path: None,
            created,
            expires,
            last_used: None,
        }
    }

    #[tokio::test]
    async fn api_tokens_are_shared_listed_touched_and_revoked() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        a.save_api_token(api_token("t1", "ann", t, None))
            .await
            .unwrap();
        a.save_api_token(api_token("t2", "ann", t + 1, Some(t + 600)))
            .await
            .unwrap();
        a.save_api_token(api_token("t3", "bob", t + 2, None))
            .await
            .unwrap();
        assert_eq!(
            *b.api_token("t1").await.unwrap().unwrap(),
            api_token("t1", "ann", t, None)
        );
        assert!(b.api_token("nope").await.unwrap().is_none());
        assert!((595..=600).contains(&ttl(&r, &a.api_token_key("t2")).await));
        assert_eq!(ttl(&r, &a.api_token_key("t1")).await, -1, "never expires");
        let ids: Vec<String> = b
            .api_tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["t1", "t2", "t3"], "oldest first");

        // Use times: written once, then only when stale; visible to the other instance.
        a.touch_api_token("t1", t + 5).await.unwrap();
        assert_eq!(
            b.api_token("t1").await.unwrap().unwrap().last_used,
            Some(t + 5)
        );
        a.touch_api_token("t1", t + 6).await.unwrap();
        b.touch_api_token("t1", t + 7).await.unwrap();
        assert_eq!(
            a.api_token("t1").await.unwrap().unwrap().last_used,
            Some(t + 5)
        );
        b.touch_api_token("t1", t + 5 + TOUCH_PERSIST_AFTER)
            .await
            .unwrap();
        assert_eq!(
            a.api_token("t1").await.unwrap().unwrap().last_used,
            Some(t + 5 + TOUCH_PERSIST_AFTER)
        );
        a.touch_api_token("gone", t).await.unwrap();
        assert!(
            a.api_token("gone").await.unwrap().is_none(),
            "not created by a touch"
        );

        assert!(b.delete_api_token("t3").await.unwrap());
        assert!(!b.delete_api_token("t3").await.unwrap());
        assert!(a.api_token("t3").await.unwrap().is_none());
        assert_eq!(b.delete_user_api_tokens("ann").await.unwrap(), 2);
        assert!(a.api_tokens().await.unwrap().is_empty());
        assert_eq!(b.delete_user_api_tokens("ann").await.unwrap(), 0);

        // One that expired by TTL leaves the listing too.
        a.save_api_token(api_token("t4", "cy", t - 100, Some(t - 1)))
            .await
            .unwrap();
        assert!(a.api_tokens().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn login_codes_are_taken_once_across_instances() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        let code = |user: &str, expires: i64| LoginCode {
            username: user.into(),
            created: t,
            expires,
        };
        a.save_login_code([1; 32], code("ann", t + 600))
            .await
            .unwrap();
        assert!(
            (595..=600).contains(&ttl(&r, &a.key(&["login_code", &hex::encode([1u8; 32])])).await)
        );
        for n in 10..30u8 {
            a.save_login_code([n; 32], code("ann", t + 600))
                .await
                .unwrap();
            let (x, y) = tokio::join!(a.take_login_code([n; 32], t), b.take_login_code([n; 32], t));
            let winners = [x.unwrap(), y.unwrap()]
                .iter()
                .filter(|c| c.is_some())
                .count();
            assert_eq!(winners, 1);
        }
        assert_eq!(
            b.take_login_code([1; 32], t).await.unwrap(),
            Some(code("ann", t + 600))
        );
        assert_eq!(a.take_login_code([1; 32], t).await.unwrap(), None);
        a.save_login_code([2; 32], code("ann", t + 60))
            .await
            .unwrap();
        assert_eq!(
            b.take_login_code([2; 32], t + 60).await.unwrap(),
            None,
            "expired"
        );
        a.save_login_code([3; 32], code("ann", t + 60))
            .await
            .unwrap();
        a.save_login_code([4; 32], code("ann", t + 60))
            .await
            .unwrap();
        a.save_login_code([5; 32], code("bob", t + 60))
            .await
            .unwrap();
        assert_eq!(b.delete_user_login_codes("ann").await.unwrap(), 2);
        assert_eq!(a.take_login_code([3; 32], t).await.unwrap(), None);
        assert!(a.take_login_code([5; 32], t).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn password_change_keeps_only_sessions_bound_to_the_new_password() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        let mut fresh = session(1, "ann", t);
        fresh.pw_fingerprint = 99;
        a.save_session(fresh).await.unwrap();
        a.save_session(session(2, "ann", t)).await.unwrap();
        a.save_session(session(3, "bob", t)).await.unwrap();
        assert_eq!(b.delete_stale_sessions("ann", 99).await.unwrap(), 1);
        assert!(a.session(&[1; 32]).await.unwrap().is_some());
        assert!(a.session(&[2; 32]).await.unwrap().is_none());
        assert!(
            a.session(&[3; 32]).await.unwrap().is_some(),
            "other users untouched"
        );
        assert_eq!(a.live_sessions(t).await.unwrap(), 2);
        assert_eq!(b.delete_stale_sessions("ann", 99).await.unwrap(), 0);
    }

    fn totp_record(step: u64) -> TotpRecord {
        TotpRecord {
            secret_hex: "3132333435363738393031323334353637383930".into(),
            algorithm: "sha1".into(),
            digits: 6,
            period: 30,
            created: 1,
            last_used_step: step,
        }
    }

    #[tokio::test]
    async fn totp_is_shared_and_each_step_is_used_once_across_instances() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        assert_eq!(
            b.use_totp_step("ann", 5).await.unwrap(),
            StepUse::NotEnrolled
        );
        a.save_totp("ann", totp_record(0)).await.unwrap();
        assert_eq!(b.totp("ann").await.unwrap(), Some(totp_record(0)));
        assert_eq!(b.use_totp_step("ann", 5).await.unwrap(), StepUse::Accepted);
        assert_eq!(a.use_totp_step("ann", 5).await.unwrap(), StepUse::Replayed);
        assert_eq!(a.use_totp_step("ann", 4).await.unwrap(), StepUse::Replayed);
        assert_eq!(a.totp("ann").await.unwrap().unwrap().last_used_step, 5);
        // The same code at the same moment on both: one accepted.
        for step in 10..30 {
            let (x, y) = tokio::join!(a.use_totp_step("ann", step), b.use_totp_step("ann", step));
            let mut got = [x.unwrap(), y.unwrap()];
            got.sort_by_key(|u| *u as u8);
            assert_eq!(got, [StepUse::Accepted, StepUse::Replayed]);
        }
        // Re-enrolment replaces the registration, step included.
        a.save_totp("ann", totp_record(0)).await.unwrap();
        assert_eq!(b.use_totp_step("ann", 6).await.unwrap(), StepUse::Accepted);
        assert!(b.delete_totp("ann").await.unwrap());
        assert!(!b.delete_totp("ann").await.unwrap());
        assert!(a.totp("ann").await.unwrap().is_none());
    }

    fn passkey_record(id: &str, user: &str, name: &str) -> PasskeyRecord {
        PasskeyRecord {
            credential_id: id.into(),
            username: user.into(),
            name: name.into(),
            created: 1,
            last_used: None,
            passkey: serde_json::json!({"cred": {"counter": 1, "id": id}}),
        }
    }

    #[tokio::test]
    async fn passkeys_are_shared_ordered_and_owned() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        a.save_passkey(passkey_record("k1", "ann", "Phone"))
            .await
            .unwrap();
        b.save_passkey(passkey_record("k2", "ann", "Key"))
            .await
            .unwrap();
        a.save_passkey(passkey_record("k3", "bob", "Laptop"))
            .await
            .unwrap();
        // An update keeps the position.
        let mut renamed = passkey_record("k1", "ann", "Old phone");
        renamed.last_used = Some(5);
        b.save_passkey(renamed).await.unwrap();
        let names: Vec<String> = a
            .passkeys("ann")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["Old phone", "Key"]);
        assert_eq!(b.passkey("k3").await.unwrap().unwrap().username, "bob");
        assert_eq!(
            b.passkey("k1").await.unwrap().unwrap().passkey["cred"]["id"],
            "k1"
        );
        assert!(b.passkey("nope").await.unwrap().is_none());
        // Someone else's credential id can be neither taken over nor deleted.
        assert!(
            a.save_passkey(passkey_record("k3", "ann", "Mine"))
                .await
                .is_err()
        );
        assert!(!a.delete_passkey("ann", "k3").await.unwrap());
        assert_eq!(b.passkey("k3").await.unwrap().unwrap().name, "Laptop");
        assert!(b.delete_passkey("ann", "k1").await.unwrap());
        assert!(!a.delete_passkey("ann", "k1").await.unwrap());
        assert_eq!(a.passkeys("ann").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn ceremonies_are_taken_once_and_expire() {
        let r = TestRedis::start();
        let (a, b) = (store_at(&r.url()), store_at(&r.url()));
        let t = now();
        a.put_ceremony("c1", "{\"challenge\":\"x\"}\nline".into(), t + 300)
            .await
            .unwrap();
        assert!((295..=300).contains(&ttl(&r, &a.key(&["ceremony", "c1"])).await));
        assert_eq!(
            b.take_ceremony("c1", t).await.unwrap().as_deref(),
            Some("{\"challenge\":\"x\"}\nline")
        );
        assert_eq!(a.take_ceremony("c1", t).await.unwrap(), None);
        a.put_ceremony("c2", "d".into(), t + 300).await.unwrap();
        assert_eq!(b.take_ceremony("c2", t + 300).await.unwrap(), None, "over");
        assert_eq!(b.take_ceremony("c2", t).await.unwrap(), None, "and gone");
        // A flood keeps only the newest MAX_CEREMONIES.
        for i in 0..MAX_CEREMONIES + 5 {
            a.put_ceremony(&format!("f{i}"), "x".into(), t + 60 + i / 4)
                .await
                .unwrap();
        }
        let mut c = redis::Client::open(r.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let n: i64 = c.zcard(a.key(&["ceremonies"])).await.unwrap();
        assert_eq!(n, MAX_CEREMONIES);
        let db: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert_eq!(
            db,
            MAX_CEREMONIES + 1,
            "the records went with their index entries"
        );
        assert_eq!(
            b.take_ceremony("f0", t).await.unwrap(),
            None,
            "the oldest went"
        );
        assert_eq!(
            b.take_ceremony(&format!("f{}", MAX_CEREMONIES + 4), t)
                .await
                .unwrap()
                .as_deref(),
            Some("x")
        );
    }

    #[tokio::test]
    async fn unreachable_redis_fails_fast_and_recovers() {
        let r = TestRedis::start();
        let url = r.url();
        let s = store_at(&url);
        s.ping().await.unwrap();
        let port = r.port;
        drop(r);
        let started = std::time::Instant::now();
        assert!(s.session(&[1; 32]).await.is_err());
        assert!(s.ping().await.is_err());
        assert!(
            started.elapsed() < OP_TIMEOUT * 2,
            "{:?}",
            started.elapsed()
        );
        assert!(s.health.failing.load(Ordering::Relaxed));
        // Back on the same port: the same store works again, without being rebuilt.
        let _back = TestRedis::start_on(port);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.ping().await.is_err() {
            assert!(std::time::Instant::now() < deadline, "no recovery");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(s.session(&[1; 32]).await.unwrap().is_none());
        assert!(!s.health.failing.load(Ordering::Relaxed));
    }
}
