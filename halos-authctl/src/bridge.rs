//! `halos-authctl bridge`: the command-line protocol of HaLOS's
//! `cockpit-authelia-users-bridge`, so the existing Cockpit users panel works unchanged.
//!
//! Protocol: JSON on stdout and exit 0; on failure `{"code", "message", "details"?}` on
//! stderr and exit 1 (usage errors exit 2). JSON is written exactly as Python's
//! `json.dumps` writes it (`", "` and `": "` separators, non-ASCII as `\u` and four hex digits), field
//! order included, because the panel and scripts compare its output. Validation rules and
//! messages are the bridge's; ours are stricter in a few places (control characters,
//! empty passwords, 64-character group names) and never looser. Writes go through the
//! same locked, atomic, format-preserving editor as `halos-authctl user`, so the daemon
//! reloads the file, and the last enabled member of `admins` can be neither deleted,
//! disabled nor removed from the group.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use authd::config::Config;
use authd::users::edit::{EditError, NewUser, UserChange, UserPatch, UsersFile, keep_last_admin};
use authd::users::{User, UsersDb, hash_password, valid_email};
use clap::Subcommand;
use serde::Serialize;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// The name the panel runs; halos-authctl answers as the bridge when invoked by it.
pub const BRIDGE_NAME: &str = "cockpit-authelia-users-bridge";

/// Groups list-groups always offers, as the original bridge does.
const SUGGESTED_GROUPS: [&str; 3] = ["admins", "users", "guests"];

const MAX_USER_ID: usize = 64;
const MAX_DISPLAYNAME: usize = 256;
const MAX_GROUP: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Subcommand, Debug)]
pub enum BridgeCommand {
    /// List all users.
    ListUsers,
    /// Get a single user.
    GetUser { user_id: String },
    /// Create a new user (reads JSON from stdin).
    CreateUser,
    /// Update a user (reads partial JSON from stdin).
    UpdateUser { user_id: String },
    /// Delete a user.
    DeleteUser { user_id: String },
    /// List all unique groups (always including admins, users and guests).
    ListGroups,
}

/// The bridge invoked under its own name (a symlink `cockpit-authelia-users-bridge` →
/// `halos-authctl`).
#[derive(clap::Parser, Debug)]
#[command(
    name = BRIDGE_NAME,
    version,
    about = "Backend CLI for the Cockpit users panel (halos-authctl bridge)"
)]
pub struct BridgeCli {
    #[command(subcommand)]
    pub command: BridgeCommand,
}

/// `true` when the program was started as `cockpit-authelia-users-bridge`.
pub fn invoked_as_bridge() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == BRIDGE_NAME)
}

/// One protocol error: `code`, `message` and optional one-key `details`.
#[derive(Debug, Serialize, PartialEq)]
pub struct BridgeError {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<BTreeMap<&'static str, String>>,
}

impl BridgeError {
    fn new(code: &'static str, message: String, detail: Option<(&'static str, String)>) -> Self {
        Self {
            code,
            message,
            details: detail.map(|(k, v)| BTreeMap::from([(k, v)])),
        }
    }
    fn not_found(id: &str) -> Self {
        Self::new(
            "USER_NOT_FOUND",
            format!("User not found: {id}"),
            Some(("user_id", id.into())),
        )
    }
    fn exists(id: &str) -> Self {
        Self::new(
            "USER_EXISTS",
            format!("User already exists: {id}"),
            Some(("user_id", id.into())),
        )
    }
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            "VALIDATION_ERROR",
            message.into(),
            Some(("field", field.into())),
        )
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new("INTERNAL_ERROR", message.into(), None)
    }
    fn database(message: String, path: &Path) -> Self {
        Self::new(
            "DATABASE_ERROR",
            message,
            Some(("path", path.display().to_string())),
        )
    }

    /// Maps an editor error; `writing` picks the bridge's read or write wording.
    fn from_edit(e: EditError, path: &Path, writing: bool) -> Self {
        match e {
            EditError::NotFound(id) => Self::not_found(&id),
            EditError::Exists(id) => Self::exists(&id),
            EditError::Invalid(m) => Self::new("VALIDATION_ERROR", m, None),
            EditError::Yaml(y) => Self::database(format!("Failed to parse YAML: {y}"), path),
            EditError::Io { source, .. } if !writing => {
                Self::database(format!("Failed to read file: {source}"), path)
            }
            other => Self::database(format!("Failed to write file: {other}"), path),
        }
    }
}

/// The user as the panel sees it (never the password digest).
#[derive(Debug, Serialize)]
struct BridgeUser<'a> {
    user_id: &'a str,
    displayname: &'a str,
    email: &'a str,
    disabled: bool,
    groups: &'a [String],
}

fn user_out(u: &User) -> BridgeUser<'_> {
    BridgeUser {
        user_id: &u.name,
        displayname: &u.displayname,
        email: &u.email,
        disabled: u.disabled,
        groups: &u.groups,
    }
}

#[derive(Serialize)]
struct Success {
    success: bool,
}

/// Python's `json.dumps` defaults: `", "` / `": "` separators and `ensure_ascii`.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serializes `v` byte for byte as Python's `json.dumps(v)`.
pub fn python_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Our types (strings, bools, lists, string maps) always serialize.
    if v.serialize(&mut ser).is_err() {
        return "null".into();
    }
    String::from_utf8(out).unwrap_or_else(|_| "null".into())
}

fn read_json_stdin() -> Result<Value, BridgeError> {
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut raw)
        .map_err(|e| BridgeError::internal(format!("cannot read stdin: {e}")))?;
    let raw = Zeroizing::new(raw);
    let text = std::str::from_utf8(&raw)
        .map_err(|e| BridgeError::internal(format!("stdin is not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| BridgeError::internal(format!("invalid JSON: {e}")))
}

fn object(v: &Value) -> Result<&Map<String, Value>, BridgeError> {
    v.as_object().ok_or_else(|| {
        BridgeError::new(
            "VALIDATION_ERROR",
            "Input must be a JSON object".into(),
            None,
        )
    })
}

fn string<'a>(v: &'a Value, field: &'static str, what: &str) -> Result<&'a str, BridgeError> {
    v.as_str()
        .ok_or_else(|| BridgeError::invalid(field, format!("{what} must be a string")))
}

fn check_user_id(v: &Value) -> Result<String, BridgeError> {
    let s = string(v, "user_id", "User ID")?;
    if s.is_empty() {
        return Err(BridgeError::invalid("user_id", "User ID cannot be empty"));
    }
    if s.chars().count() > MAX_USER_ID {
        return Err(BridgeError::invalid(
            "user_id",
            format!("User ID cannot exceed {MAX_USER_ID} characters"),
        ));
    }
    if !authd::users::valid_name(s) {
        return Err(BridgeError::invalid(
            "user_id",
            "User ID must contain only alphanumeric characters, underscores, and hyphens",
        ));
    }
    Ok(s.to_string())
}

fn check_displayname(v: &Value) -> Result<String, BridgeError> {
    let s = string(v, "displayname", "Display name")?;
    if s.trim().is_empty() {
        return Err(BridgeError::invalid(
            "displayname",
            "Display name cannot be empty",
        ));
    }
    if s.chars().count() > MAX_DISPLAYNAME {
        return Err(BridgeError::invalid(
            "displayname",
            format!("Display name cannot exceed {MAX_DISPLAYNAME} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(BridgeError::invalid(
            "displayname",
            "Display name cannot contain control characters",
        ));
    }
    Ok(s.to_string())
}

fn check_email(v: &Value) -> Result<String, BridgeError> {
    let s = string(v, "email", "Email")?;
    if s.is_empty() {
        return Err(BridgeError::invalid("email", "Email cannot be empty"));
    }
    if !valid_email(s) || s.chars().any(char::is_control) {
        return Err(BridgeError::invalid("email", "Invalid email format"));
    }
    Ok(s.to_string())
}

fn check_groups(v: &Value) -> Result<Vec<String>, BridgeError> {
    let list = v
        .as_array()
        .ok_or_else(|| BridgeError::invalid("groups", "Groups must be a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for g in list {
        let g = string(g, "groups", "Group name")?;
        if g.is_empty() {
            return Err(BridgeError::invalid("groups", "Group name cannot be empty"));
        }
        if g.chars().count() > MAX_GROUP {
            return Err(BridgeError::invalid(
                "groups",
                format!("Group name '{g}' cannot exceed {MAX_GROUP} characters"),
            ));
        }
        if !authd::users::valid_name(g) {
            return Err(BridgeError::invalid(
                "groups",
                format!(
                    "Group name '{g}' must contain only alphanumeric characters, underscores, and hyphens"
                ),
            ));
        }
        out.push(g.to_string());
    }
    Ok(out)
}

fn check_password(v: &Value) -> Result<Zeroizing<String>, BridgeError> {
    let s = string(v, "password", "Password")?;
    if s.is_empty() {
        return Err(BridgeError::invalid("password", "Password cannot be empty"));
    }
    if s.len() > MAX_PASSWORD_BYTES {
        return Err(BridgeError::invalid(
            "password",
            format!("Password cannot exceed {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    Ok(Zeroizing::new(s.to_string()))
}

/// Python's truthiness, which the original applies to `disabled`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

struct Bridge<'a> {
    file: UsersFile,
    config: &'a Config,
}

impl Bridge<'_> {
    fn load(&self) -> Result<UsersDb, BridgeError> {
        self.file
            .load()
            .map_err(|e| BridgeError::from_edit(e, &self.file.path, false))
    }

    fn apply(&self, change: &UserChange) -> Result<UsersDb, BridgeError> {
        self.file
            .apply(change, |db| keep_last_admin(db, change))
            .map_err(|e| BridgeError::from_edit(e, &self.file.path, true))
    }

    fn hash(&self, pw: &str) -> Result<String, BridgeError> {
        hash_password(
            pw.as_bytes(),
            &self.config.authentication_backend.file.password.argon2,
        )
        .map_err(|e| BridgeError::internal(format!("cannot hash the password: {e}")))
    }

    fn user_json(db: &UsersDb, id: &str) -> Result<String, BridgeError> {
        db.get(id)
            .map(|u| python_json(&user_out(u)))
            .ok_or_else(|| BridgeError::not_found(id))
    }

    fn run(&self, cmd: &BridgeCommand) -> Result<String, BridgeError> {
        match cmd {
            BridgeCommand::ListUsers => {
                let db = self.load()?;
                let users: Vec<_> = db.iter().map(|u| user_out(u)).collect();
                Ok(python_json(&users))
            }
            BridgeCommand::GetUser { user_id } => Self::user_json(&self.load()?, user_id),
            BridgeCommand::ListGroups => {
                let db = self.load()?;
                let mut groups = db.groups();
                groups.extend(SUGGESTED_GROUPS.iter().map(|g| g.to_string()));
                groups.sort();
                groups.dedup();
                Ok(python_json(&groups))
            }
            BridgeCommand::CreateUser => {
                let data = read_json_stdin()?;
                let data = object(&data)?;
                let field = |k: &str, msg: &'static str, name: &'static str| {
                    data.get(k).ok_or_else(|| BridgeError::invalid(name, msg))
                };
                let user_id = check_user_id(field("user_id", "User ID is required", "user_id")?)?;
                let displayname = check_displayname(field(
                    "displayname",
                    "Display name is required",
                    "displayname",
                )?)?;
                let email = check_email(field("email", "Email is required", "email")?)?;
                let password =
                    check_password(field("password", "Password is required", "password")?)?;
                let groups = match data.get("groups") {
                    Some(g) => check_groups(g)?,
                    None => Vec::new(),
                };
                let disabled = data.get("disabled").is_some_and(truthy);
                if self.load()?.get(&user_id).is_some() {
                    return Err(BridgeError::exists(&user_id));
                }
                let change = UserChange::Add(NewUser {
                    name: user_id.clone(),
                    displayname,
                    email,
                    groups,
                    password_digest: self.hash(&password)?,
                    disabled,
                });
                Self::user_json(&self.apply(&change)?, &user_id)
            }
            BridgeCommand::UpdateUser { user_id } => {
                let data = read_json_stdin()?;
                if self.load()?.get(user_id).is_none() {
                    return Err(BridgeError::not_found(user_id));
                }
                let data = object(&data)?;
                let mut patch = UserPatch::default();
                if let Some(v) = data.get("displayname") {
                    patch.displayname = Some(check_displayname(v)?);
                }
                if let Some(v) = data.get("email") {
                    patch.email = Some(check_email(v)?);
                }
                // As the original: an empty password means "leave it".
                if let Some(v) = data.get("password").filter(|v| truthy(v)) {
                    let pw = check_password(v)?;
                    patch.password_digest = Some(self.hash(&pw)?);
                }
                if let Some(v) = data.get("disabled") {
                    patch.disabled = Some(truthy(v));
                }
                if let Some(v) = data.get("groups") {
                    patch.groups = Some(check_groups(v)?);
                }
                let change = UserChange::Update(user_id.clone(), patch);
                Self::user_json(&self.apply(&change)?, user_id)
            }
            BridgeCommand::DeleteUser { user_id } => {
                if self.load()?.get(user_id).is_none() {
                    return Err(BridgeError::not_found(user_id));
                }
                self.apply(&UserChange::Delete(user_id.clone()))?;
                Ok(python_json(&Success { success: true }))
            }
        }
    }
}

/// Runs one bridge command: JSON + newline on stdout and exit 0, or the error JSON on
/// stderr and exit 1.
pub fn run(config: anyhow::Result<Config>, cmd: &BridgeCommand) -> ExitCode {
    let result = match config {
        Ok(config) => Bridge {
            file: UsersFile::new(&config.authentication_backend.file.path),
            config: &config,
        }
        .run(cmd),
        Err(e) => Err(BridgeError::internal(format!("{e:#}"))),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", python_json(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_as_python_writes_it() {
        let groups = vec!["admins".to_string(), "crew".to_string()];
        let u = BridgeUser {
            user_id: "ann",
            displayname: "Änne \"Skip\" ☃ 𝄞\n\u{7f}/",
            email: "a@b.c",
            disabled: false,
            groups: &groups,
        };
        // python3 -c 'import json; print(json.dumps({"user_id": "ann", "displayname":
        //   "Änne \"Skip\" ☃ 𝄞\n\x7f/", "email": "a@b.c", "disabled": False,
        //   "groups": ["admins", "crew"]}))'
        assert_eq!(
            python_json(&u),
            r#"{"user_id": "ann", "displayname": "\u00c4nne \"Skip\" \u2603 \ud834\udd1e\n\u007f/", "email": "a@b.c", "disabled": false, "groups": ["admins", "crew"]}"#
        );
        assert_eq!(python_json(&Vec::<String>::new()), "[]");
        assert_eq!(
            python_json(&BridgeError::not_found("x")),
            r#"{"code": "USER_NOT_FOUND", "message": "User not found: x", "details": {"user_id": "x"}}"#
        );
        assert_eq!(
            python_json(&BridgeError::internal("boom")),
            r#"{"code": "INTERNAL_ERROR", "message": "boom"}"#
        );
    }

    #[test]
    fn truthiness_follows_python() {
        for (v, t) in [
            (Value::Null, false),
            (Value::from(0), false),
            (Value::from(0.0), false),
            (Value::from(2), true),
            (Value::from(""), false),
            (Value::from("no"), true),
            (Value::from(Vec::<Value>::new()), false),
            (Value::from(true), true),
        ] {
            assert_eq!(truthy(&v), t, "{v}");
        }
    }
}
