//! Crash-safe, format-preserving edits of the users file.
//!
//! Every change: take an advisory lock on a sidecar `<file>.lock`, re-read the file, edit
//! only the nodes that change (yaml-edit keeps comments, order, quoting and unknown keys),
//! re-parse the result to prove it is valid, write it to a temporary file in the same
//! directory, fsync, give it the old mode and owner, rename it over the original and
//! fsync the directory. A reader (or a crash) therefore sees the old or the new file,
//! never a mix. Symlinks are refused so the daemon cannot be tricked into writing
//! elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use yaml_edit::{Document, Mapping};

use super::{UsersDb, valid_email, valid_name};
use crate::yaml::YamlError;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("user {0:?} not found")]
    NotFound(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("{0} is a symbolic link; refusing to write through it")]
    Symlink(PathBuf),
    #[error("the users file cannot be edited safely: {0}")]
    Unparsable(String),
    #[error("{0}")]
    Yaml(#[from] YamlError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EditError + '_ {
    move |source| EditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A new user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub displayname: String,
    pub email: String,
    pub groups: Vec<String>,
    /// A digest from [`super::hash_password`].
    pub password_digest: String,
    pub disabled: bool,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub displayname: Option<String>,
    pub email: Option<String>,
    pub groups: Option<Vec<String>>,
    pub disabled: Option<bool>,
    pub password_digest: Option<String>,
}

/// One edit of the users file.
#[derive(Debug, Clone)]
pub enum UserChange {
    Add(NewUser),
    Update(String, UserPatch),
    Delete(String),
}

fn check_groups(groups: &[String]) -> Result<(), EditError> {
    for g in groups {
        if !valid_name(g) {
            return Err(EditError::Invalid(format!(
                "group {g:?} must match ^[a-zA-Z0-9_-]+$ and be at most 64 characters"
            )));
        }
    }
    Ok(())
}

fn check_displayname(d: &str) -> Result<(), EditError> {
    if d.trim().is_empty() || d.chars().count() > 256 || d.chars().any(char::is_control) {
        return Err(EditError::Invalid(
            "display name must be 1–256 characters without control characters".into(),
        ));
    }
    Ok(())
}

fn check_email(e: &str) -> Result<(), EditError> {
    if !valid_email(e) {
        return Err(EditError::Invalid(format!(
            "{e:?} is not a valid email address"
        )));
    }
    Ok(())
}

impl UserChange {
    /// Input validation, before the file is touched.
    pub fn validate(&self) -> Result<(), EditError> {
        match self {
            UserChange::Add(u) => {
                if !valid_name(&u.name) {
                    return Err(EditError::Invalid(format!(
                        "user name {:?} must match ^[a-zA-Z0-9_-]+$ and be at most 64 characters",
                        u.name
                    )));
                }
                check_displayname(&u.displayname)?;
                check_email(&u.email)?;
                check_groups(&u.groups)
            }
            UserChange::Update(_, p) => {
                if let Some(d) = &p.displayname {
                    check_displayname(d)?;
                }
                if let Some(e) = &p.email {
                    check_email(e)?;
                }
                if let Some(g) = &p.groups {
                    check_groups(g)?;
                }
                Ok(())
            }
            UserChange::Delete(_) => Ok(()),
        }
    }
}

/// What a users file starts as when halos-authctl or provisioning creates it.
const NEW_FILE: &str = "# halos-authd users database (Authelia file-backend format).\n# Edit with halos-authctl, or by hand: the daemon reloads it on change.\nusers:\n";

/// YAML single-quoted scalar: always a string, whatever the text looks like.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn scalar_node(text: &str) -> Result<yaml_edit::YamlNode, EditError> {
    let doc = Document::from_str(&format!("v: {text}\n"))
        .map_err(|e| EditError::Unparsable(e.to_string()))?;
    doc.as_mapping()
        .and_then(|m| m.get("v"))
        .ok_or_else(|| EditError::Unparsable("cannot build scalar".into()))
}

fn groups_node(groups: &[String]) -> Result<yaml_edit::YamlNode, EditError> {
    let text = format!(
        "v: [{}]\n",
        groups
            .iter()
            .map(|g| quote(g))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let doc = Document::from_str(&text).map_err(|e| EditError::Unparsable(e.to_string()))?;
    doc.as_mapping()
        .and_then(|m| m.get("v"))
        .ok_or_else(|| EditError::Unparsable("cannot build list".into()))
}

fn users_mapping(doc: &Document) -> Result<Mapping, EditError> {
    let root = doc
        .as_mapping()
        .ok_or_else(|| EditError::Unparsable("the document is not a mapping".into()))?;
    if let Some(m) = root.get_mapping("users") {
        return Ok(m);
    }
    // `users:` absent, null or `{}`: start a fresh block mapping.
    root.set("users", Mapping::new());
    root.get_mapping("users")
        .ok_or_else(|| EditError::Unparsable("cannot create the users mapping".into()))
}

/// Applies `change` to the YAML `text`; returns the new text. Pure: no I/O.
pub fn apply_change(text: &str, change: &UserChange) -> Result<String, EditError> {
    change.validate()?;
    let before = UsersDb::parse(text, "users file")?;
    let base = if text.trim().is_empty() {
        NEW_FILE
    } else {
        text
    };
    let doc = Document::from_str(base).map_err(|e| EditError::Unparsable(e.to_string()))?;
    let users = users_mapping(&doc)?;
    match change {
        UserChange::Add(u) => {
            if before.get(&u.name).is_some() {
                return Err(EditError::Exists(u.name.clone()));
            }
            let mut entry = format!(
                "displayname: {}\npassword: {}\nemail: {}\ngroups: [{}]\n",
                quote(&u.displayname),
                quote(&u.password_digest),
                quote(&u.email),
                u.groups
                    .iter()
                    .map(|g| quote(g))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if u.disabled {
                entry.push_str("disabled: true\n");
            }
            let snippet =
                Document::from_str(&entry).map_err(|e| EditError::Unparsable(e.to_string()))?;
            let m = snippet
                .as_mapping()
                .ok_or_else(|| EditError::Unparsable("cannot build user".into()))?;
            users.set(u.name.as_str(), m);
        }
        UserChange::Update(name, p) => {
            if before.get(name).is_none() {
                return Err(EditError::NotFound(name.clone()));
            }
            let m = users
                .get_mapping(name.as_str())
                .ok_or_else(|| EditError::Unparsable(format!("users.{name} is not a mapping")))?;
            if let Some(d) = &p.displayname {
                m.set("displayname", scalar_node(&quote(d))?);
            }
            if let Some(e) = &p.email {
                m.set("email", scalar_node(&quote(e))?);
            }
            if let Some(g) = &p.groups {
                m.set("groups", groups_node(g)?);
            }
            if let Some(pw) = &p.password_digest {
                m.set("password", scalar_node(&quote(pw))?);
            }
            match p.disabled {
                Some(true) => m.set("disabled", scalar_node("true")?),
                // Enabling only touches files that already say `disabled:`.
                Some(false) if m.contains_key("disabled") => {
                    m.set("disabled", scalar_node("false")?)
                }
                _ => {}
            }
        }
        UserChange::Delete(name) => {
            if users.remove(name.as_str()).is_none() {
                return Err(EditError::NotFound(name.clone()));
            }
        }
    }
    let out = doc.to_string();
    // Prove the edit produced what we meant before anything touches the disk.
    let after = UsersDb::parse(&out, "edited users file").map_err(|e| {
        EditError::Unparsable(format!("the edit would produce an invalid file: {e}"))
    })?;
    let expected_len = match change {
        UserChange::Add(_) => before.len() + 1,
        UserChange::Update(..) => before.len(),
        UserChange::Delete(_) => before.len() - 1,
    };
    if after.len() != expected_len {
        return Err(EditError::Unparsable("the edit changed other users".into()));
    }
    Ok(out)
}

/// The group whose last enabled member cannot be removed or disabled.
pub const ADMIN_GROUP: &str = "admins";

/// Refuses a change that would leave `admins` without an enabled member, so the
/// appliance cannot be locked out of its own administration.
pub fn keep_last_admin(db: &UsersDb, change: &UserChange) -> Result<(), EditError> {
    let target = match change {
        UserChange::Delete(n) => n,
        UserChange::Update(n, p)
            if p.disabled == Some(true)
                || p.groups
                    .as_ref()
                    .is_some_and(|g| !g.iter().any(|g| g == ADMIN_GROUP)) =>
        {
            n
        }
        _ => return Ok(()),
    };
    let is_active_admin =
        |u: &super::User| !u.disabled && u.groups.iter().any(|g| g == ADMIN_GROUP);
    let Some(user) = db.get(target) else {
        return Ok(());
    };
    if is_active_admin(user) && db.iter().filter(|u| is_active_admin(u)).count() == 1 {
        return Err(EditError::Invalid(format!(
            "{target:?} is the last enabled member of {ADMIN_GROUP:?}; add another admin first"
        )));
    }
    Ok(())
}

/// The users file on disk.
#[derive(Debug, Clone)]
pub struct UsersFile {
    pub path: PathBuf,
}

impl UsersFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        self.path.with_file_name(name)
    }

    fn refuse_symlink(&self) -> Result<Option<fs::Metadata>, EditError> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_symlink() => Err(EditError::Symlink(self.path.clone())),
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    /// Reads and parses the current file (absent = empty).
    pub fn load(&self) -> Result<UsersDb, EditError> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Ok(UsersDb::parse(&t, &self.path.display().to_string())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersDb::default()),
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    /// Applies `change` under the lock and replaces the file atomically.
    /// `check` sees the database before the change and may refuse it (e.g. last admin).
    pub fn apply(
        &self,
        change: &UserChange,
        check: impl FnOnce(&UsersDb) -> Result<(), EditError>,
    ) -> Result<UsersDb, EditError> {
        change.validate()?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf();
        let lock_path = self.lock_path();
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _guard = lock.write().map_err(io(&lock_path))?;

        let meta = self.refuse_symlink()?;
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&self.path)(e)),
        };
        check(&UsersDb::parse(&text, &self.path.display().to_string())?)?;
        let out = apply_change(&text, change)?;

        let mut tmp = tempfile::Builder::new()
            .prefix(".users_database.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        tmp.write_all(out.as_bytes()).map_err(io(tmp.path()))?;
        let mode = meta.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io(tmp.path()))?;
        if let Some(m) = &meta {
            keep_owner(tmp.as_file(), m.uid(), m.gid()).map_err(io(tmp.path()))?;
        }
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist(&self.path)
            .map_err(|e| io(&self.path)(e.error))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        Ok(UsersDb::parse(&out, &self.path.display().to_string())?)
    }
}

/// Gives `file` the owner of the file it replaces. Only root can change owners; anyone
/// else can only write files they own, which then already match.
fn keep_owner(file: &File, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = file.metadata()?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Not root and group differs: keep going with our own ids rather than fail.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && meta.uid() == uid => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW";

    fn file() -> String {
        format!(
            "# Users of the boat\nusers:\n  admin:  # the first one\n    displayname: \"Administrator\"\n    password: \"{D}\"\n    email: admin@halos.local\n    groups:\n      - admins   # keep me\n    phone_number: '+358 40 1'\n\n  # crew below\n  crew:\n    displayname: Crew\n    password: '{D}'\n"
        )
    }

    fn new_user(name: &str) -> NewUser {
        NewUser {
            name: name.into(),
            displayname: "Mary O'Hara".into(),
            email: "mary@halos.local".into(),
            groups: vec!["users".into()],
            password_digest: D.into(),
            disabled: false,
        }
    }

    #[test]
    fn password_change_keeps_comments_order_and_unknown_keys() {
        let out = apply_change(
            &file(),
            &UserChange::Update(
                "admin".into(),
                UserPatch {
                    password_digest: Some(
                        "$2b$10$NfST7TH6tvZDttwB5aMwBe5x3mdY5Om.KPBezN6b6TSdmWzlUwwty".into(),
                    ),
                    ..Default::default()
                },
            ),
        )
        .unwrap();
        for kept in [
            "# Users of the boat",
            "# the first one",
            "# keep me",
            "# crew below",
            "phone_number: '+358 40 1'",
        ] {
            assert!(out.contains(kept), "lost {kept:?} in:\n{out}");
        }
        assert!(out.contains("NfST7TH6"), "{out}");
        assert!(out.find("admin:").unwrap() < out.find("crew:").unwrap());
        let db = UsersDb::parse(&out, "x").unwrap();
        assert!(db.get("admin").unwrap().password_text.contains("NfST7TH6"));
        assert_eq!(db.get("crew").unwrap().password_text, D);
    }

    #[test]
    fn add_update_delete() {
        let out = apply_change(&file(), &UserChange::Add(new_user("mary"))).unwrap();
        let db = UsersDb::parse(&out, "x").unwrap();
        let mary = db.get("mary").unwrap();
        assert_eq!(mary.displayname, "Mary O'Hara");
        assert_eq!(mary.groups, vec!["users"]);
        assert!(out.contains("# crew below"));

        let out = apply_change(
            &out,
            &UserChange::Update(
                "mary".into(),
                UserPatch {
                    groups: Some(vec!["admins".into(), "users".into()]),
                    disabled: Some(true),
                    email: Some("m@halos.local".into()),
                    ..Default::default()
                },
            ),
        )
        .unwrap();
        let db = UsersDb::parse(&out, "x").unwrap();
        let mary = db.get("mary").unwrap();
        assert_eq!(mary.groups, vec!["admins", "users"]);
        assert!(mary.disabled);
        assert_eq!(mary.email, "m@halos.local");

        let out = apply_change(&out, &UserChange::Delete("mary".into())).unwrap();
        let db = UsersDb::parse(&out, "x").unwrap();
        assert!(db.get("mary").is_none() && db.get("crew").is_some());
        assert!(out.contains("# keep me"));
    }

    #[test]
    fn refuses_bad_input_and_conflicts() {
        assert!(matches!(
            apply_change(&file(), &UserChange::Add(new_user("admin"))),
            Err(EditError::Exists(_))
        ));
        assert!(matches!(
            apply_change(&file(), &UserChange::Delete("nobody".into())),
            Err(EditError::NotFound(_))
        ));
        assert!(matches!(
            apply_change(&file(), &UserChange::Add(new_user("bad name"))),
            Err(EditError::Invalid(_))
        ));
        let mut u = new_user("x");
        u.email = "nope".into();
        assert!(matches!(
            apply_change(&file(), &UserChange::Add(u)),
            Err(EditError::Invalid(_))
        ));
        let mut u = new_user("x");
        u.groups = vec!["a,b".into()];
        assert!(matches!(
            apply_change(&file(), &UserChange::Add(u)),
            Err(EditError::Invalid(_))
        ));
    }

    #[test]
    fn last_admin_is_protected() {
        let db = UsersDb::parse(&file(), "x").unwrap();
        let del = UserChange::Delete("admin".into());
        assert!(matches!(
            keep_last_admin(&db, &del),
            Err(EditError::Invalid(_))
        ));
        let disable = UserChange::Update(
            "admin".into(),
            UserPatch {
                disabled: Some(true),
                ..Default::default()
            },
        );
        assert!(keep_last_admin(&db, &disable).is_err());
        let demote = UserChange::Update(
            "admin".into(),
            UserPatch {
                groups: Some(vec![]),
                ..Default::default()
            },
        );
        assert!(keep_last_admin(&db, &demote).is_err());
        assert!(keep_last_admin(&db, &UserChange::Delete("crew".into())).is_ok());
        let out = apply_change(
            &file(),
            &UserChange::Update(
                "crew".into(),
                UserPatch {
                    groups: Some(vec!["admins".into()]),
                    ..Default::default()
                },
            ),
        )
        .unwrap();
        let db = UsersDb::parse(&out, "x").unwrap();
        assert!(keep_last_admin(&db, &del).is_ok());
    }

    #[test]
    fn works_on_empty_and_missing_files() {
        for start in [
            "",
            "users: {}\n",
            "users:\n",
            "# only a comment\nusers: {}\n",
        ] {
            let out = apply_change(start, &UserChange::Add(new_user("mary")))
                .unwrap_or_else(|e| panic!("{start:?}: {e}"));
            let db = UsersDb::parse(&out, "x").unwrap();
            assert_eq!(db.len(), 1, "{start:?} → {out}");
        }
    }

    #[test]
    fn apply_keeps_mode_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users_database.yml");
        fs::write(&p, file()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let f = UsersFile::new(&p);
        f.apply(&UserChange::Add(new_user("mary")), |_| Ok(()))
            .unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert!(f.load().unwrap().get("mary").is_some());
        // no temp files left behind
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
            "{names:?}"
        );

        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let err = UsersFile::new(&link)
            .apply(&UserChange::Delete("mary".into()), |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, EditError::Symlink(_)), "{err}");
        assert!(f.load().unwrap().get("mary").is_some());

        // new file gets 0600
        let fresh = dir.path().join("fresh.yml");
        UsersFile::new(&fresh)
            .apply(&UserChange::Add(new_user("a")), |_| Ok(()))
            .unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    }
}
