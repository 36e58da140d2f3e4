//! Session cookies: finding the current session, issuing new ones, ending them.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use super::request::{cookies, new_session_id, session_key};
use crate::config::SessionConfig;
use crate::site::CookieDomain;
use crate::store::{AuthLevel, Session, Store};
use crate::users::User;

/// A valid session and its (still active) user.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session: Arc<Session>,
    pub user: Arc<User>,
}

/// Whether `s` is still within its lifetimes at `now`.
pub fn session_alive(cfg: &SessionConfig, s: &Session, now: i64) -> bool {
    let lifetime = if s.remember_me {
        cfg.remember_me
    } else {
        cfg.expiration
    };
    if now - s.created > lifetime.as_secs() as i64 {
        return false;
    }
    // Remember-me sessions are not subject to inactivity (as in Authelia).
    s.remember_me || now - s.last_activity <= cfg.inactivity.as_secs() as i64
}

/// The session the request's cookie names, if it is valid for `cd`; a store failure counts
/// as no session (pages then ask to sign in, and signing in reports the failure). A session
/// that must first change the default password counts as no session (see [`pending_session`]).
pub async fn current_session(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
) -> Option<SessionUser> {
    try_current_session(st, headers, cd).await.ok().flatten()
}

/// Like [`current_session`], but a store failure is an error rather than no session:
/// forward auth fails closed on it.
pub async fn try_current_session(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
) -> Result<Option<SessionUser>, crate::store::StoreError> {
    Ok(lookup_session(st, headers, cd)
        .await?
        .filter(|s| !s.session.must_change_password))
}

/// Like [`current_session`], including one that must change the default password: only
/// the password change page uses it.
pub async fn pending_session(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
) -> Option<SessionUser> {
    lookup_session(st, headers, cd).await.ok().flatten()
}

/// The session the request's cookie names, if it is valid for `cd`, or the store's error.
/// A session whose user was deleted, disabled or changed password is ended here.
async fn lookup_session(
    st: &AppState,
    headers: &HeaderMap,
    cd: &CookieDomain,
) -> Result<Option<SessionUser>, crate::store::StoreError> {
    let now = st.clock.now();
    // More than one session cookie: one may have been tossed by a sibling subdomain, and
    // picking either could log the browser in as someone else. No session at all.
    let mut values = cookies(headers, &cd.cookie_name);
    let first = values.next();
    if values.any(|v| Some(v) != first) {
        return Ok(None);
    }
    let Some(key) = first.and_then(|v| st.session_keys.key(v, now)) else {
        return Ok(None);
    };
    let Some(session) = st.store.session(&key).await? else {
        return Ok(None);
    };
    // A cookie moved to another domain is not honoured.
    if session.cookie_domain != cd.domain {
        return Ok(None);
    }
    let users = st.users.snapshot();
    let user = users.active(&session.username).cloned();
    let valid_user = user
        .as_ref()
        .is_some_and(|u| u.pw_fingerprint == session.pw_fingerprint);
    if !session_alive(&st.config().session, &session, now) || !valid_user {
        let _ = st.store.delete_session(&key).await;
        return Ok(None);
    }
    if !session.remember_me && now > session.last_activity {
        let _ = st.store.touch_session(&session, now).await;
    }
    Ok(user.map(|user| SessionUser { session, user }))
}

/// What a login step established.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub level: AuthLevel,
    pub remember_me: bool,
    /// RFC 8176 methods (`pwd`, `hwk`, …).
    pub amr: Vec<String>,
    /// Logged in with the default password: only the change page accepts the session.
    pub must_change_password: bool,
}

/// Creates a session for `user` and returns the `Set-Cookie` value.
/// A fresh id every time: a session id never survives a login step (no fixation).
pub async fn start_session(
    st: &AppState,
    cd: &CookieDomain,
    user: &User,
    login: NewSession,
    previous: Option<&Session>,
) -> Result<HeaderValue, crate::store::StoreError> {
    let NewSession {
        level,
        remember_me,
        amr,
        must_change_password,
    } = login;
    let now = st.clock.now();
    if let Some(p) = previous {
        st.store.delete_session(&p.key).await?;
    }
    let id = new_session_id();
    let key = session_key(&id).ok_or(crate::store::StoreError::Unavailable)?;
    let session = Session {
        key,
        username: user.name.clone(),
        level,
        cookie_domain: cd.domain.clone(),
        created: previous.map_or(now, |p| p.created),
        last_activity: now,
        remember_me,
        auth_time: now,
        // An admin-issued login code is as good as the password for /settings: it exists
        // so that a user can enrol a first passkey.
        reauth_at: if amr.iter().any(|m| m == "pwd" || m == "code") {
            now
        } else {
            0
        },
        amr,
        pw_fingerprint: user.pw_fingerprint,
        must_change_password,
    };
    st.store.save_session(session).await?;
    let max_age = remember_me.then(|| st.config().session.remember_me.as_secs());
    Ok(set_cookie(cd, &id, max_age))
}

/// Replaces `previous` by a session with a fresh id (no fixation) carrying its fields
/// as changed by `change`, re-bound to `user`'s current password. Returns the cookie
/// and the new session.
pub async fn reissue_session(
    st: &AppState,
    cd: &CookieDomain,
    user: &User,
    previous: &Session,
    change: impl FnOnce(&mut Session),
) -> Result<(HeaderValue, Arc<Session>), crate::store::StoreError> {
    st.store.delete_session(&previous.key).await?;
    let id = new_session_id();
    let key = session_key(&id).ok_or(crate::store::StoreError::Unavailable)?;
    let mut session = previous.clone();
    session.key = key;
    session.last_activity = st.clock.now();
    session.pw_fingerprint = user.pw_fingerprint;
    change(&mut session);
    let max_age = session
        .remember_me
        .then(|| st.config().session.remember_me.as_secs());
    st.store.save_session(session.clone()).await?;
    Ok((set_cookie(cd, &id, max_age), Arc::new(session)))
}

/// Adds authentication methods to a session's `amr`, keeping it free of duplicates.
pub fn add_amr(amr: &mut Vec<String>, methods: &[&str]) {
    for m in methods {
        if !amr.iter().any(|a| a == m) {
            amr.push((*m).to_string());
        }
    }
}

/// `Set-Cookie` for the session id (or, with an empty id and `Some(0)`, its removal).
pub fn set_cookie(cd: &CookieDomain, id: &str, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!(
        "{}={id}; Domain={}; Path=/; HttpOnly; SameSite=Lax",
        cd.cookie_name, cd.domain
    );
    if cd.secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(cd: &CookieDomain) -> HeaderValue {
    set_cookie(cd, "", Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(remember_me: bool) -> Session {
        Session {
            key: [0; 32],
            username: "a".into(),
            level: AuthLevel::OneFactor,
            cookie_domain: "halos.local".into(),
            created: 1000,
            last_activity: 1000,
            remember_me,
            auth_time: 1000,
            amr: vec![],
            pw_fingerprint: 0,
            reauth_at: 0,
            must_change_password: false,
        }
    }

    #[test]
    fn inactivity_expiration_and_remember_me() {
        let cfg = SessionConfig {
            inactivity: crate::duration::ConfigDuration::from_secs(300),
            expiration: crate::duration::ConfigDuration::from_secs(3600),
            remember_me: crate::duration::ConfigDuration::from_secs(86_400),
            ..SessionConfig::default()
        };
        let s = session(false);
        assert!(session_alive(&cfg, &s, 1000 + 300));
        assert!(!session_alive(&cfg, &s, 1000 + 301), "inactive too long");
        let active = Session {
            last_activity: 1000 + 3500,
            ..session(false)
        };
        assert!(
            !session_alive(&cfg, &active, 1000 + 3601),
            "expired although active"
        );
        let r = session(true);
        assert!(
            session_alive(&cfg, &r, 1000 + 80_000),
            "remember-me ignores inactivity"
        );
        assert!(!session_alive(&cfg, &r, 1000 + 86_401));
    }
}
