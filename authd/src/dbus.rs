//! The D-Bus API: `org.halos.Auth1` at `/org/halos/Auth1`, interfaces
//! `org.halos.Auth1.Users` and `org.halos.Auth1.Clients` (DESIGN §12; the committed
//! introspection is `authd/dbus/org.halos.Auth1.xml`).
//!
//! A thin adapter like the HTTP handlers: every write goes through the same locked,
//! format-preserving users-file editor as `halos-authctl` (same validation, last enabled
//! admin protected); new passwords are hashed on the verifier pool. Every call is
//! authorized: root (the bus daemon's `GetConnectionUnixUser`) always; anyone else needs
//! the polkit action `org.halos.auth1.manage`, checked per call for the caller's bus name.
//! No polkit on the bus means denied. `UsersChanged` follows the users store, so it is
//! emitted for every change, whoever made it (D-Bus, halos-authctl, an editor, Cockpit).

use std::collections::HashMap;
use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, interface};
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};
use zeroize::Zeroizing;

use crate::http::AppState;
use crate::store::Store;
use crate::users::User;
use crate::users::edit::{EditError, NewUser, UserChange, UserPatch, UsersFile, keep_last_admin};

pub const BUS_NAME: &str = "org.halos.Auth1";
pub const OBJECT_PATH: &str = "/org/halos/Auth1";
/// The polkit action non-root callers need.
pub const MANAGE_ACTION: &str = "org.halos.auth1.manage";
/// Groups ListGroups always offers (as the Cockpit bridge's list-groups).
pub const SUGGESTED_GROUPS: [&str; 3] = ["admins", "users", "guests"];

const MAX_PASSWORD_BYTES: usize = 1024;
/// Bound on connecting and acquiring the name, so start-up never hangs on the bus.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which bus the API is offered on (`--dbus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BusKind {
    System,
    Session,
    #[default]
    None,
}

impl std::fmt::Display for BusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BusKind::System => "system",
            BusKind::Session => "session",
            BusKind::None => "none",
        })
    }
}

/// Errors callers see: `org.halos.Auth1.Error.*`; anything else is
/// `org.freedesktop.DBus.Error.Failed`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.halos.Auth1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotFound(String),
    Exists(String),
    Invalid(String),
    Denied(String),
}

impl ApiError {
    fn failed(msg: impl Into<String>) -> Self {
        ApiError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::Failed(
            msg.into(),
        ))))
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotFound(_) => ApiError::NotFound(e.to_string()),
            EditError::Exists(_) => ApiError::Exists(e.to_string()),
            EditError::Invalid(m) => ApiError::Invalid(m),
            other => ApiError::failed(other.to_string()),
        }
    }
}

/// (name, displayname, email, groups, disabled)
pub type UserRecord = (String, String, String, Vec<String>, bool);

fn record(u: &User) -> UserRecord {
    (
        u.name.clone(),
        u.displayname.clone(),
        u.email.clone(),
        u.groups.clone(),
        u.disabled,
    )
}

/// Allows root, else asks polkit about `sender`; returns the caller's uid for the audit log.
async fn authorize(conn: &Connection, hdr: &Header<'_>) -> Result<u32, ApiError> {
    let denied = |why: &str| ApiError::Denied(format!("not authorized to manage users: {why}"));
    let sender = hdr.sender().ok_or_else(|| denied("no sender"))?;
    let bus = zbus::fdo::DBusProxy::new(conn).await?;
    let uid = bus
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| denied(&e.to_string()))?;
    if uid == 0 {
        return Ok(uid);
    }
    let subject = Subject::new_for_message_header(hdr).map_err(|e| denied(&e.to_string()))?;
    let checked = async {
        AuthorityProxy::new(conn)
            .await?
            .check_authorization(
                &subject,
                MANAGE_ACTION,
                &HashMap::new(),
                CheckAuthorizationFlags::AllowUserInteraction.into(),
                "",
            )
            .await
    };
    match checked.await {
        Ok(r) if r.is_authorized => Ok(uid),
        Ok(_) => {
            tracing::info!(target: "audit", event = "dbus_denied", uid, "D-Bus call refused by polkit");
            Err(denied(&format!("polkit refused {MANAGE_ACTION}")))
        }
        Err(e) => {
            tracing::warn!(uid, error = %e, "polkit unavailable: D-Bus call from a non-root caller denied");
            Err(denied("polkit is not available"))
        }
    }
}

fn check_password(pw: &str) -> Result<(), ApiError> {
    if pw.is_empty() {
        return Err(ApiError::Invalid("the password is empty".into()));
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::Invalid(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `org.halos.Auth1.Users`.
pub struct Users {
    st: AppState,
}

impl Users {
    fn file(&self) -> UsersFile {
        UsersFile::new(self.st.users.path())
    }

    fn user(&self, name: &str) -> Result<std::sync::Arc<User>, ApiError> {
        self.st
            .users
            .snapshot()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("user {name:?} not found")))
    }

    async fn hash(&self, pw: &str) -> Result<String, ApiError> {
        let params = self
            .st
            .config()
            .authentication_backend
            .file
            .password
            .argon2
            .clone();
        self.st
            .verifier
            .hash(pw, &params)
            .await
            .map_err(|e| ApiError::failed(format!("cannot hash the password: {e}")))
    }

    /// Applies `change` (off the runtime) and installs the result at once, so the next call
    /// sees it; the file watcher then finds nothing new.
    async fn apply(&self, change: UserChange) -> Result<(), ApiError> {
        let file = self.file();
        let db = tokio::task::spawn_blocking(move || {
            file.apply(&change, |db| keep_last_admin(db, &change))
        })
        .await
        .map_err(|e| ApiError::failed(e.to_string()))??;
        self.st.users.install(db);
        Ok(())
    }
}

#[interface(name = "org.halos.Auth1.Users")]
impl Users {
    /// Every user: (name, displayname, email, groups, disabled).
    async fn list_users(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<UserRecord>, ApiError> {
        authorize(conn, &hdr).await?;
        Ok(self.st.users.snapshot().iter().map(|u| record(u)).collect())
    }

    /// One user, as one record of ListUsers.
    async fn get_user(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(UserRecord,), ApiError> {
        authorize(conn, &hdr).await?;
        let user = self.user(&name)?;
        Ok((record(&user),))
    }

    // The D-Bus signature fixes the arguments.
    #[allow(clippy::too_many_arguments)]
    async fn create_user(
        &self,
        name: String,
        displayname: String,
        email: String,
        groups: Vec<String>,
        password: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let password = Zeroizing::new(password);
        let uid = authorize(conn, &hdr).await?;
        let mut new = NewUser {
            name,
            displayname,
            email,
            groups,
            password_digest: String::new(),
            disabled: false,
        };
        // Validate before spending a hash on it.
        UserChange::Add(new.clone()).validate()?;
        check_password(&password)?;
        if self.st.users.snapshot().get(&new.name).is_some() {
            return Err(EditError::Exists(new.name).into());
        }
        new.password_digest = self.hash(&password).await?;
        let name = new.name.clone();
        self.apply(UserChange::Add(new)).await?;
        tracing::info!(target: "audit", event = "dbus_user_create", user = %name, uid, "user created over D-Bus");
        Ok(())
    }

    /// Changes displayname (s), email (s), groups (as) and/or disabled (b).
    async fn update_user(
        &self,
        name: String,
        changes: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let uid = authorize(conn, &hdr).await?;
        let mut patch = UserPatch::default();
        let wrong = |k: &str, t: &str| ApiError::Invalid(format!("{k} must be of type {t}"));
        for (key, value) in changes {
            match key.as_str() {
                "displayname" => {
                    patch.displayname = Some(String::try_from(value).map_err(|_| wrong(&key, "s"))?)
                }
                "email" => {
                    patch.email = Some(String::try_from(value).map_err(|_| wrong(&key, "s"))?)
                }
                "groups" => {
                    patch.groups =
                        Some(Vec::<String>::try_from(value).map_err(|_| wrong(&key, "as"))?)
                }
                "disabled" => {
                    patch.disabled = Some(bool::try_from(value).map_err(|_| wrong(&key, "b"))?)
                }
                other => {
                    return Err(ApiError::Invalid(format!(
                        "unknown key {other:?}; expected displayname, email, groups or disabled"
                    )));
                }
            }
        }
        self.user(&name)?;
        self.apply(UserChange::Update(name.clone(), patch)).await?;
        tracing::info!(target: "audit", event = "dbus_user_update", user = %name, uid, "user updated over D-Bus");
        Ok(())
    }

    async fn set_password(
        &self,
        name: String,
        password: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let password = Zeroizing::new(password);
        let uid = authorize(conn, &hdr).await?;
        self.user(&name)?;
        check_password(&password)?;
        let digest = self.hash(&password).await?;
        let patch = UserPatch {
            password_digest: Some(digest),
            ..Default::default()
        };
        self.apply(UserChange::Update(name.clone(), patch)).await?;
        tracing::info!(target: "audit", event = "dbus_password_set", user = %name, uid, "password changed over D-Bus");
        Ok(())
    }

    async fn delete_user(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let uid = authorize(conn, &hdr).await?;
        self.apply(UserChange::Delete(name.clone())).await?;
        tracing::info!(target: "audit", event = "dbus_user_delete", user = %name, uid, "user deleted over D-Bus");
        Ok(())
    }

    /// The groups users are in, plus the suggested admins, users and guests; sorted.
    async fn list_groups(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<String>, ApiError> {
        authorize(conn, &hdr).await?;
        let mut groups = self.st.users.snapshot().groups();
        groups.extend(SUGGESTED_GROUPS.iter().map(|g| g.to_string()));
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Ends every session of the user; returns how many there were.
    async fn revoke_sessions(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<u32, ApiError> {
        let uid = authorize(conn, &hdr).await?;
        self.user(&name)?;
        let n = self
            .st
            .store
            .delete_user_sessions(&name)
            .await
            .map_err(|e| ApiError::failed(e.to_string()))?;
        tracing::info!(target: "audit", event = "dbus_sessions_revoked", user = %name, sessions = n, uid, "sessions revoked over D-Bus");
        Ok(n)
    }

    /// Issues a single-use login code for an enabled user (valid 15 minutes), e.g. to
    /// enrol a first passkey at the portal's /login-code page. Shown once; only its hash
    /// is stored.
    async fn issue_login_code(
        &self,
        name: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        use crate::login_code::{DEFAULT_TTL, LoginCodeError, issue};
        let uid = authorize(conn, &hdr).await?;
        let users = self.st.users.snapshot();
        let now = self.st.clock.now();
        let issued = issue(&self.st.store, &users, &name, now, DEFAULT_TTL)
            .await
            .map_err(|e| match e {
                LoginCodeError::NoSuchUser(_) => ApiError::NotFound(e.to_string()),
                LoginCodeError::Disabled(_) => ApiError::Invalid(e.to_string()),
                other => ApiError::failed(other.to_string()),
            })?;
        tracing::info!(target: "audit", event = "dbus_login_code", user = %name, uid, expires = issued.expires, "login code issued over D-Bus");
        Ok(issued.code.as_str().to_string())
    }

    /// Emitted after every change of the users database, whatever made it.
    #[zbus(signal)]
    pub async fn users_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

/// `org.halos.Auth1.Clients`.
pub struct Clients {
    st: AppState,
}

#[interface(name = "org.halos.Auth1.Clients")]
impl Clients {
    /// Every OIDC client in force: (client id, name, redirect URIs).
    async fn list_clients(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<(String, String, Vec<String>)>, ApiError> {
        authorize(conn, &hdr).await?;
        let registry = self.st.oidc.registry.load();
        Ok(registry
            .clients()
            .iter()
            .map(|c| (c.id.clone(), c.name.clone(), c.redirect_uris.clone()))
            .collect())
    }

    /// Re-reads authd.yml's clients, the snippet directory and the secret files now.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let uid = authorize(conn, &hdr).await?;
        let st = self.st.clone();
        tokio::task::spawn_blocking(move || crate::reload::reload_clients(&st))
            .await
            .map_err(|e| ApiError::failed(e.to_string()))?;
        tracing::info!(target: "audit", event = "dbus_clients_reload", uid, "OIDC clients reloaded over D-Bus");
        Ok(())
    }
}

/// Emits `UsersChanged` whenever the users store changes (D-Bus writes, file edits).
fn spawn_users_changed(conn: &Connection, st: &AppState) {
    let mut rx = st.users.subscribe();
    let conn = conn.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let sent = match SignalEmitter::new(&conn, OBJECT_PATH) {
                Ok(e) => Users::users_changed(&e).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot emit UsersChanged");
            }
        }
    });
}

/// Offers the API on `kind`'s bus. Any failure is logged and the daemon goes on without
/// it (HTTP keeps serving); the returned connection must be kept alive.
pub async fn serve(st: &AppState, kind: BusKind) -> Option<Connection> {
    let builder = match kind {
        BusKind::None => return None,
        BusKind::System => zbus::connection::Builder::system(),
        BusKind::Session => zbus::connection::Builder::session(),
    };
    let connect = async {
        builder?
            .name(BUS_NAME)?
            .serve_at(OBJECT_PATH, Users { st: st.clone() })?
            .serve_at(OBJECT_PATH, Clients { st: st.clone() })?
            .build()
            .await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(conn)) => {
            spawn_users_changed(&conn, st);
            tracing::info!(bus = %kind, name = BUS_NAME, "D-Bus API ready");
            Some(conn)
        }
        Ok(Err(e)) => {
            tracing::error!(bus = %kind, error = %e, "D-Bus API unavailable (HTTP keeps serving): cannot connect to the bus or own {BUS_NAME}");
            None
        }
        Err(_) => {
            tracing::error!(bus = %kind, "D-Bus API unavailable (HTTP keeps serving): the bus did not answer within {CONNECT_TIMEOUT:?}");
            None
        }
    }
}
