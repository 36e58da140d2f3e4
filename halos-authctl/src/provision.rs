//! `halos-authctl provision` and `halos-authctl migrate-from-authelia`.
//!
//! Provisioning runs from the package's postinst and from `halos-authd-provision.service`
//! before the daemon on every boot. It is idempotent and only ever *adds* what is missing:
//!
//! 1. the keys directory (`keys/` beside the state database, mode 0700);
//! 2. the daemon's secrets in it (0600, 256 random bits each, hex), kept once they exist;
//! 3. users, only when the users database has none: HaLOS's Authelia users when that file
//!    exists (every hash kept), else the admin named in the Homarr branding file's
//!    `[credentials]`, else `admin` / `halos` in group `admins`.
//!
//! Everything it creates takes the owner and group of the directory it is created in, so
//! when the package has made `/var/lib/halos-authd` belong to the daemon's system user,
//! root-run provisioning leaves files the (unprivileged) daemon can read and rewrite.
//!
//! The migration copies a users file byte for byte (comments, unknown keys and every
//! digest stay) with the users-file writer's rules: lock `<file>.lock`, write a temporary
//! file in the same directory, fsync, rename, fsync the directory; symlinks refused.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use authd::config::Config;
use authd::users::edit::{ADMIN_GROUP, EditError, NewUser, UserChange, UsersFile};
use authd::users::hash::random_bytes;
use authd::users::{UsersDb, hash_password, valid_email, valid_name};
use zeroize::Zeroizing;

/// HaLOS's Authelia users file (halos-core-containers), the default migration source.
pub const AUTHELIA_USERS_FILE: &str =
    "/var/lib/container-apps/halos-core-containers/data/authelia/users_database.yml";
/// The Homarr branding file whose `[credentials]` name the first admin on HaLOS.
pub const BRANDING_FILE: &str = "/etc/halos-homarr-branding/branding.toml";
/// Written when neither an Authelia users file nor branding credentials exist. Public,
/// documented HaLOS default; the portal makes the user change it at first login.
pub const DEFAULT_ADMIN: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "halos";

/// Secrets the daemon reads from the keys directory: file name and purpose.
/// Each is 32 random bytes, hex-encoded, one line, mode 0600.
pub const SECRETS: &[(&str, &str)] = &[
    (
        "hmac.key",
        "HMAC key for opaque tokens (OIDC codes, refresh tokens, CSRF)",
    ),
    (
        "storage.key",
        "encryption key for secrets at rest (TOTP seeds)",
    ),
];

/// Options of `halos-authctl provision`.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    pub branding_file: PathBuf,
    /// Authelia users file to import when ours has no users; `None` disables the import.
    pub authelia_users: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------------
// Ownership and modes

/// Gives `path` (just created by us) the owner and group of `dir`, the directory it lives
/// in. Only root can do this; for anyone else the ids already match or nothing can be done.
pub(crate) fn adopt_owner(path: &Path, dir: &Path) -> anyhow::Result<()> {
    let d = fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let m =
        fs::symlink_metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    if m.uid() == d.uid() && m.gid() == d.gid() {
        return Ok(());
    }
    match std::os::unix::fs::lchown(path, Some(d.uid()), Some(d.gid())) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot chown {}", path.display())),
    }
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
        .to_path_buf()
}

/// Creates `dir` (and missing parents, 0750) if needed; refuses symlinks.
fn ensure_dir(dir: &Path, mode: u32, report: &mut Vec<String>) -> anyhow::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a symbolic link; refusing to use it", dir.display())
        }
        Ok(m) if !m.is_dir() => bail!("{} exists and is not a directory", dir.display()),
        Ok(m) => {
            if m.mode() & 0o7777 != mode {
                fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                    .with_context(|| format!("cannot chmod {}", dir.display()))?;
                report.push(format!("fixed mode of {} to {mode:04o}", dir.display()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = parent_of(dir);
            if !parent.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(&parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            // The umask may have removed bits; set exactly what was asked.
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            adopt_owner(dir, &parent)?;
            report.push(format!("created {} ({mode:04o})", dir.display()));
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", dir.display())),
    }
}

// ---------------------------------------------------------------------------------------
// Secrets

fn random_hex(bytes: usize) -> Zeroizing<String> {
    let mut raw = Zeroizing::new(vec![0u8; bytes]);
    random_bytes(&mut raw);
    let mut s = Zeroizing::new(String::with_capacity(bytes * 2 + 1));
    for b in raw.iter() {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
    }
    s
}

/// Creates `dir/name` with a fresh secret unless a non-empty one is there.
fn ensure_secret(dir: &Path, name: &str, report: &mut Vec<String>) -> anyhow::Result<()> {
    let path = dir.join(name);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!("{} is a symbolic link; refusing to use it", path.display())
        }
        Ok(m) if m.is_file() && m.len() > 0 => {
            if m.mode() & 0o777 != 0o600 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
                report.push(format!("fixed mode of {} to 0600", path.display()));
            }
            return Ok(());
        }
        Ok(m) if !m.is_file() => bail!("{} exists and is not a file", path.display()),
        _ => {}
    }
    // Absent or empty (an interrupted earlier run): write a new one atomically.
    let mut tmp = tempfile::Builder::new()
        .prefix(".secret.")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let secret = random_hex(32);
    tmp.write_all(secret.as_bytes())?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    adopt_owner(&path, dir)?;
    File::open(dir)?.sync_all()?;
    report.push(format!("created secret {}", path.display()));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Branding credentials (`[credentials]` of a TOML file)

/// The first admin named by the Homarr branding file.
pub struct BrandingCredentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for BrandingCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrandingCredentials({}, ***)", self.username)
    }
}

/// Parses one TOML string value (basic `"…"` with escapes, or literal `'…'`) at the start
/// of `s`; returns it and the rest of the line.
fn toml_string(s: &str) -> Result<(String, &str), String> {
    if s.starts_with("\"\"\"") || s.starts_with("'''") {
        return Err("multi-line strings are not supported here".into());
    }
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, '\'')) => {
            let end = s[1..].find('\'').ok_or("unterminated string")?;
            Ok((s[1..1 + end].to_string(), &s[end + 2..]))
        }
        Some((_, '"')) => {
            let mut out = String::new();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return Ok((out, &s[i + 1..])),
                    '\\' => {
                        let (_, e) = chars.next().ok_or("unterminated escape")?;
                        match e {
                            'b' => out.push('\u{8}'),
                            't' => out.push('\t'),
                            'n' => out.push('\n'),
                            'f' => out.push('\u{c}'),
                            'r' => out.push('\r'),
                            '"' => out.push('"'),
                            '\\' => out.push('\\'),
                            'u' | 'U' => {
                                let n = if e == 'u' { 4 } else { 8 };
                                let hex: String = (0..n)
                                    .map(|_| chars.next().map(|(_, c)| c).unwrap_or(' '))
                                    .collect();
                                let cp = u32::from_str_radix(&hex, 16)
                                    .map_err(|_| format!("bad escape \\{e}{hex}"))?;
                                out.push(
                                    char::from_u32(cp)
                                        .ok_or_else(|| format!("bad escape \\{e}{hex}"))?,
                                );
                            }
                            other => return Err(format!("bad escape \\{other}")),
                        }
                    }
                    c => out.push(c),
                }
            }
            Err("unterminated string".into())
        }
        _ => Err("expected a quoted string".into()),
    }
}

/// Reads `admin_username` and `admin_password` from the `[credentials]` table of a TOML
/// file. `Ok(None)` when the file does not exist or has no `[credentials]` table.
pub fn read_branding(path: &Path) -> anyhow::Result<Option<BrandingCredentials>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut in_credentials = false;
    let mut seen_table = false;
    let mut username = None;
    let mut password: Option<Zeroizing<String>> = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('[') {
            let header = t.split('#').next().unwrap_or("").trim();
            in_credentials = header == "[credentials]";
            seen_table |= in_credentials;
            continue;
        }
        if !in_credentials {
            continue;
        }
        let Some((key, value)) = t.split_once('=') else {
            bail!("{}:{}: expected `key = value`", path.display(), n + 1);
        };
        let key = key.trim().trim_matches('"');
        if key != "admin_username" && key != "admin_password" {
            continue;
        }
        let (v, rest) = toml_string(value.trim_start())
            .map_err(|e| anyhow::anyhow!("{}:{}: {key}: {e}", path.display(), n + 1))?;
        let rest = rest.trim();
        if !rest.is_empty() && !rest.starts_with('#') {
            bail!(
                "{}:{}: {key}: unexpected text after the value",
                path.display(),
                n + 1
            );
        }
        if key == "admin_username" {
            username = Some(v);
        } else {
            password = Some(Zeroizing::new(v));
        }
    }
    if !seen_table {
        return Ok(None);
    }
    let (Some(username), Some(password)) = (username, password) else {
        bail!(
            "{}: [credentials] needs both admin_username and admin_password",
            path.display()
        );
    };
    if !valid_name(&username) {
        bail!(
            "{}: admin_username {username:?} must match ^[a-zA-Z0-9_-]+$ (at most 64 characters)",
            path.display()
        );
    }
    if password.is_empty() || password.len() > 1024 {
        bail!("{}: admin_password must be 1–1024 bytes", path.display());
    }
    Ok(Some(BrandingCredentials { username, password }))
}

// ---------------------------------------------------------------------------------------
// Domain for the default admin's email address

/// `HALOS_DOMAIN` from the environment, else from HaLOS's `/run/halos/domain.env`.
fn halos_domain(domain_env_file: &Path) -> Option<String> {
    if let Ok(d) = std::env::var("HALOS_DOMAIN")
        && !d.trim().is_empty()
    {
        return Some(d.trim().to_string());
    }
    let text = fs::read_to_string(domain_env_file).ok()?;
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("HALOS_DOMAIN=")?;
        let v = v.trim().trim_matches(['"', '\'']);
        (!v.is_empty()).then(|| v.to_string())
    })
}

fn admin_email(user: &str) -> String {
    let candidate = halos_domain(Path::new("/run/halos/domain.env"))
        .map(|d| format!("{user}@{}", d.to_ascii_lowercase()));
    match candidate {
        Some(e) if valid_email(&e) => e,
        _ => format!("{user}@halos.local"),
    }
}

// ---------------------------------------------------------------------------------------
// Whole-file replacement of the users file (migration)

fn lock_path(file: &Path) -> PathBuf {
    let mut name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    file.with_file_name(name)
}

/// Replaces the users file with `text` under the writer lock. `check` sees the current
/// database (under the lock) and may refuse. Keeps the mode and owner of the file it
/// replaces; a new file is 0600 and takes the directory's owner.
fn replace_users_file(
    target: &Path,
    text: &str,
    check: impl FnOnce(&UsersDb) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = parent_of(target);
    let lock = lock_path(target);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock)
        .with_context(|| format!("cannot open {}", lock.display()))?;
    adopt_owner(&lock, &dir)?;
    let mut lock_file = fd_lock::RwLock::new(lock_file);
    let _guard = lock_file
        .write()
        .with_context(|| format!("cannot lock {}", lock.display()))?;

    let meta = match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!(
                "{} is a symbolic link; refusing to write through it",
                target.display()
            )
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", target.display())),
    };
    let current = match fs::read_to_string(target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", target.display())),
    };
    let db = UsersDb::parse(&current, &target.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    check(&db)?;

    let mut tmp = tempfile::Builder::new()
        .prefix(".users_database.")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    let (mode, uid, gid) = match &meta {
        Some(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
        None => {
            let d = fs::metadata(&dir)?;
            (0o600, d.uid(), d.gid())
        }
    };
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    let now = tmp.as_file().metadata()?;
    if now.uid() != uid || now.gid() != gid {
        match std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && now.uid() == uid => {}
            Err(e) => return Err(e).context("cannot give the new users file its owner"),
        }
    }
    tmp.as_file().sync_all()?;
    tmp.persist(target)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", target.display()))?;
    File::open(&dir)?.sync_all()?;
    Ok(())
}

/// Reads and validates an Authelia users file for import. Returns the text and user count.
fn read_authelia_users(from: &Path) -> anyhow::Result<(String, usize)> {
    let m =
        fs::symlink_metadata(from).with_context(|| format!("cannot read {}", from.display()))?;
    if !m.is_file() && !m.file_type().is_symlink() {
        bail!("{} is not a file", from.display());
    }
    let text =
        fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let db = UsersDb::parse(&text, &from.display().to_string()).map_err(|e| {
        anyhow::anyhow!("{e}\n(nothing was imported; fix the file or import users one by one)")
    })?;
    Ok((text, db.len()))
}

/// `halos-authctl migrate-from-authelia`: copies `from` over the configured users file.
/// Refuses a target that already has users unless `force`; then the old file is kept
/// beside it as `<file>.before-migration`. Returns the number of users imported.
pub fn migrate(config: &Config, from: &Path, force: bool) -> anyhow::Result<usize> {
    let target = config.authentication_backend.file.path.clone();
    let (text, count) = read_authelia_users(from)?;
    if count == 0 {
        bail!("{} has no users; nothing to import", from.display());
    }
    if fs::canonicalize(from).ok() == fs::canonicalize(&target).ok() && target.exists() {
        bail!("{} is already the users file", from.display());
    }
    let dir = parent_of(&target);
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let backup = {
        let mut n = target
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        n.push(".before-migration");
        target.with_file_name(n)
    };
    replace_users_file(&target, &text, |db| {
        if db.is_empty() {
            return Ok(());
        }
        if !force {
            bail!(
                "{} already has {} users; use --force to replace them (the old file is kept as {})",
                target.display(),
                db.len(),
                backup.display()
            );
        }
        // Keep the old file: a hard link costs nothing and keeps its mode and owner.
        let _ = fs::remove_file(&backup);
        fs::hard_link(&target, &backup)
            .or_else(|_| fs::copy(&target, &backup).map(|_| ()))
            .with_context(|| format!("cannot keep a backup at {}", backup.display()))?;
        Ok(())
    })?;
    Ok(count)
}

// ---------------------------------------------------------------------------------------
// Provisioning

/// Runs provisioning; returns what it did, one line per action (empty = nothing to do).
pub fn provision(config: &Config, opts: &ProvisionOptions) -> anyhow::Result<Vec<String>> {
    let mut report = Vec::new();

    // 1. Keys directory and secrets.
    let keys = config.storage.local.keys_dir();
    ensure_dir(&keys, 0o700, &mut report)?;
    for (name, _) in SECRETS {
        ensure_secret(&keys, name, &mut report)?;
    }
    // OIDC signing keys (RS256 + ES256), so a freshly flashed device has its own before the
    // daemon first starts; the files take the keys directory's owner like the rest.
    let before: Vec<PathBuf> = list_dir(&keys);
    authd::oidc::SigningKeys::load_or_generate(&keys)
        .map_err(|e| anyhow::anyhow!("{}: {e}", keys.display()))?;
    for path in list_dir(&keys).into_iter().filter(|p| !before.contains(p)) {
        adopt_owner(&path, &keys)?;
        report.push(format!("created signing key {}", path.display()));
    }

    // 2. Users, only when there are none.
    let users_path = config.authentication_backend.file.path.clone();
    let file = UsersFile::new(&users_path);
    let db = file.load().map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(the users file was left untouched; fix it, then run provision again)"
        )
    })?;
    if !db.is_empty() {
        return Ok(report);
    }
    let dir = parent_of(&users_path);
    if !dir.is_dir() {
        ensure_dir(&dir, 0o750, &mut report)?;
    }

    let authelia = match &opts.authelia_users {
        Some(from) if from.exists() => Some((from, read_authelia_users(from)?)),
        _ => None,
    };
    if let Some((from, (text, count))) = authelia.filter(|(_, (_, n))| *n > 0) {
        replace_users_file(&users_path, &text, |db| {
            if db.is_empty() {
                Ok(())
            } else {
                bail!("users appeared while provisioning; left untouched")
            }
        })?;
        report.push(format!(
            "imported {count} users from {} (every password hash kept)",
            from.display()
        ));
        return Ok(report);
    }

    let branding = read_branding(&opts.branding_file)?;
    let (name, password, source) = match &branding {
        Some(b) => (
            b.username.clone(),
            b.password.clone(),
            format!("credentials from {}", opts.branding_file.display()),
        ),
        None => (
            DEFAULT_ADMIN.to_string(),
            Zeroizing::new(DEFAULT_PASSWORD.to_string()),
            format!("the default password {DEFAULT_PASSWORD:?}"),
        ),
    };
    let digest = hash_password(
        password.as_bytes(),
        &config.authentication_backend.file.password.argon2,
    )?;
    let change = UserChange::Add(NewUser {
        email: admin_email(&name),
        displayname: "Administrator".into(),
        name: name.clone(),
        groups: vec![ADMIN_GROUP.to_string()],
        password_digest: digest,
        disabled: false,
    });
    let existed = users_path.exists();
    match file.apply(&change, |db| {
        if db.is_empty() {
            Ok(())
        } else {
            Err(EditError::Exists("(another user)".into()))
        }
    }) {
        Ok(_) => {}
        // Someone added users between our look and the lock: theirs win.
        Err(EditError::Exists(_)) => return Ok(report),
        Err(e) => return Err(e.into()),
    }
    if !existed {
        adopt_owner(&users_path, &dir)?;
    }
    adopt_owner(&lock_path(&users_path), &dir)?;
    report.push(format!(
        "created admin {name:?} in group {ADMIN_GROUP:?} with {source} in {}; change the password at first login",
        users_path.display()
    ));
    Ok(report)
}
