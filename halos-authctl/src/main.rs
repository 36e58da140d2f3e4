//! `halos-authctl`: administration CLI for halos-authd.
//!
//! Works with the daemon stopped: it edits the same files the daemon watches, with the
//! same crash-safe writer. Exit codes: 0 success, 1 failure, 2 usage error.
//! Passwords are never taken from argv: `--password-stdin`, or a no-echo prompt on a TTY.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use authd::config::{Config, DEFAULT_CONFIG_PATH};
use authd::users::edit::{EditError, NewUser, UserChange, UserPatch, UsersFile};
use authd::users::{User, UsersDb, hash_password};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

mod bridge;
mod provision;

#[derive(Parser, Debug)]
#[command(
    name = "halos-authctl",
    version,
    about = "Administer halos-authd: users, provisioning, migration from Authelia, configuration checks",
    propagate_version = true
)]
struct Cli {
    /// Configuration file of the daemon (optional at the default path).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "AUTHD_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,
    /// Users file to use instead of the one the configuration names.
    #[arg(long, global = true, value_name = "PATH")]
    users_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage users in the users database.
    #[command(subcommand)]
    User(UserCommand),
    /// Print an argon2id digest for a password read from stdin or a prompt.
    HashPassword(PasswordSource),
    /// Validate the configuration and the users file offline.
    Check,
    /// OIDC clients: what the daemon would load, and offline checks for packages.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// First-boot provisioning: keys directory, secrets, and a first admin when the users
    /// database has no users. Idempotent: only adds what is missing, never changes users.
    ///
    /// The first users are, in order of preference: HaLOS's Authelia users (every password
    /// hash kept), the `[credentials]` admin_username/admin_password of the Homarr branding
    /// file, or `admin` with the default password `halos`, in group `admins`. Files it
    /// creates get the owner of the directory they are created in.
    Provision(ProvisionArgs),
    /// API tokens for scripts: `Authorization: Bearer <token>` or `X-Api-Key: <token>`
    /// pass forward auth as their owner.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Browser sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Import an Authelia users file (HaLOS's by default), keeping every password hash,
    /// comment and unknown key. Refuses to replace a users file that has users, unless --force.
    MigrateFromAuthelia(MigrateArgs),
    /// The JSON protocol of HaLOS's cockpit-authelia-users-bridge, for the Cockpit users
    /// panel: JSON on stdout (exit 0), or {"code", "message", "details"} on stderr (exit 1).
    /// Also reached by running halos-authctl under the name cockpit-authelia-users-bridge.
    #[command(subcommand)]
    Bridge(bridge::BridgeCommand),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it on stdout (the only time it is shown).
    Create {
        /// The owner: an existing, enabled user.
        #[arg(long, value_name = "USER")]
        user: String,
        /// A label, e.g. what script uses it.
        #[arg(long, value_name = "TEXT", default_value = "")]
        name: String,
        /// Only for hosts matching this glob (`*` any characters, `?` one), e.g. `*.example.com`.
        #[arg(long, value_name = "GLOB")]
        host: Option<String>,
        /// Only for paths matching this glob, e.g. `/api/*`.
        #[arg(long, value_name = "GLOB")]
        path: Option<String>,
        /// Lifetime, e.g. `90d`, `12h` (default: no expiry).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        /// Only this user's tokens.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (as shown by `token list`).
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum SessionsCommand {
    /// End every browser session of USER; prints how many.
    Revoke { user: String },
}

#[derive(Subcommand, Debug)]
enum ClientsCommand {
    /// List the clients the daemon would load (authd.yml + snippets), with expanded
    /// redirect URIs and the reason for every skipped file.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Validate snippet files (default: the whole snippet directory). Exit 1 on any problem.
    Check { files: Vec<PathBuf> },
}

#[derive(Args, Debug)]
struct ProvisionArgs {
    /// Branding file whose [credentials] name the first admin (used only if it exists).
    #[arg(long, value_name = "PATH", default_value = provision::BRANDING_FILE)]
    branding: PathBuf,
    /// Authelia users file imported when the users database has no users (if it exists).
    #[arg(long, value_name = "PATH", default_value = provision::AUTHELIA_USERS_FILE)]
    authelia_users: PathBuf,
    /// Do not import Authelia users; create the first admin instead.
    #[arg(long)]
    no_import: bool,
}

#[derive(Args, Debug)]
struct MigrateArgs {
    /// The Authelia users file to import.
    #[arg(long, value_name = "PATH", default_value = provision::AUTHELIA_USERS_FILE)]
    from: PathBuf,
    /// Replace a users file that already has users (the old one is kept as
    /// <file>.before-migration).
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct PasswordSource {
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one user.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a user.
    Add {
        name: String,
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        #[arg(long)]
        email: String,
        /// Group membership (repeat for several).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Create the account disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Change a user's display name, email, groups or enabled state.
    Update {
        name: String,
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Replace the user's groups (repeat for several).
        #[arg(long = "group", value_name = "GROUP", conflicts_with = "no_groups")]
        groups: Vec<String>,
        /// Remove the user from every group.
        #[arg(long)]
        no_groups: bool,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Delete a user.
    #[command(alias = "delete")]
    Del { name: String },
    /// Issue a one-time login code for NAME and print it on stdout (shown once). The
    /// user signs in with it once at <portal>/login-code, e.g. to enrol a first passkey.
    LoginCode {
        name: String,
        /// How long the code is valid (at most 7d).
        #[arg(long, value_name = "DURATION", default_value = "15m")]
        expires: String,
    },
}

/// A failure: exit 1 with a clear message on stderr.
struct Failure(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.into())
    }
}

fn main() -> ExitCode {
    if bridge::invoked_as_bridge() {
        let b = <bridge::BridgeCli as Parser>::parse();
        return bridge::run(load_config_at(None, None), &b.command);
    }
    let cli = Cli::parse();
    if let Command::Bridge(cmd) = &cli.command {
        return bridge::run(load_config(&cli), cmd);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(e)) => {
            eprintln!("halos-authctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    load_config_at(cli.config.as_deref(), cli.users_file.as_deref())
}

/// The configuration at `config` (or the default path, optional there; `AUTHD_CONFIG`
/// when set), with the users file replaced by `users_file`.
fn load_config_at(
    config: Option<&std::path::Path>,
    users_file: Option<&std::path::Path>,
) -> anyhow::Result<Config> {
    let env_config = std::env::var_os("AUTHD_CONFIG").map(PathBuf::from);
    let (path, optional) = match config.map(PathBuf::from).or(env_config) {
        Some(p) => (p, false),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), true),
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = Config::load(&path, optional, &env)
        .map_err(|e| anyhow::anyhow!("invalid configuration:\n{e}"))?;
    if let Some(u) = users_file {
        config.authentication_backend.file.path = u.to_path_buf();
    }
    Ok(config)
}

fn read_password(src: &PasswordSource, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    let pw = if src.password_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_string())
    } else if std::io::stdin().is_terminal() {
        let pw = Zeroizing::new(rpassword::prompt_password("Password: ")?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
            if *again != *pw {
                bail!("the passwords do not match");
            }
        }
        pw
    } else {
        bail!("no password given: use --password-stdin (passwords are never taken as arguments)");
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    if pw.len() > 1024 {
        bail!("the password is longer than 1024 bytes");
    }
    Ok(pw)
}

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "name": u.name,
        "displayname": u.displayname,
        "email": u.email,
        "groups": u.groups,
        "disabled": u.disabled,
        "password_algorithm": u.digest.algorithm_name(),
    })
}

/// Refuses a change that would leave no enabled member in `admins`.
fn keep_an_admin(change: &UserChange) -> impl FnOnce(&UsersDb) -> Result<(), EditError> + '_ {
    move |db| authd::users::edit::keep_last_admin(db, change)
}

fn clients(config: &Config, cmd: ClientsCommand) -> Result<(), Failure> {
    use authd::oidc::snippets;
    match cmd {
        ClientsCommand::List { json } => {
            let loaded = authd::reload::load_clients(config, &Default::default());
            let mut skipped: Vec<String> = loaded
                .snippet_problems
                .iter()
                .map(ToString::to_string)
                .collect();
            skipped.extend(loaded.registry.errors().iter().map(ToString::to_string));
            let clients: Vec<serde_json::Value> = loaded
                .registry
                .clients()
                .iter()
                .map(|c| {
                    json!({
                        "client_id": c.id,
                        "client_name": c.name,
                        "source": c.source,
                        "public": c.public,
                        "token_endpoint_auth_method": c.auth_method.as_str(),
                        "redirect_uris": c.redirect_uris,
                        "scopes": c.scopes.to_string(),
                    })
                })
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"clients": clients, "skipped": skipped}))?
                );
            } else {
                for c in &clients {
                    println!(
                        "{}\t{}\t{}",
                        c["client_id"].as_str().unwrap_or(""),
                        c["source"].as_str().unwrap_or(""),
                        c["redirect_uris"]
                    );
                }
                for s in &skipped {
                    eprintln!("skipped: {s}");
                }
            }
        }
        ClientsCommand::Check { files } => {
            let hostnames = authd::hostnames::Hostnames::load(
                &config.hostnames_file.0,
                &authd::hostnames::SystemNames::from_system(),
            );
            let mut problems: Vec<String> = Vec::new();
            let entries: Vec<(String, authd::config::OidcClientConfig)> = if files.is_empty() {
                let s = snippets::load_dir(
                    &config.identity_providers.oidc.clients_dir,
                    &hostnames,
                    &Default::default(),
                );
                problems.extend(s.problems.iter().map(ToString::to_string));
                s.clients
            } else {
                let mut v = Vec::new();
                for f in &files {
                    let text = match std::fs::read_to_string(f) {
                        Ok(t) if t.len() <= snippets::MAX_SNIPPET_BYTES => t,
                        Ok(_) => {
                            problems.push(format!(
                                "{}: larger than {} bytes",
                                f.display(),
                                snippets::MAX_SNIPPET_BYTES
                            ));
                            continue;
                        }
                        Err(e) => {
                            problems.push(format!("{}: {e}", f.display()));
                            continue;
                        }
                    };
                    match snippets::parse_snippet(&text, f) {
                        Ok(c) => {
                            v.push((f.display().to_string(), snippets::expand(&c, &hostnames)))
                        }
                        Err(p) => problems.push(p.to_string()),
                    }
                }
                v
            };
            let registry = authd::oidc::ClientRegistry::build(entries, snippets::read_secret_file);
            problems.extend(registry.errors().iter().map(ToString::to_string));
            for p in &problems {
                eprintln!("{p}");
            }
            if !problems.is_empty() {
                return Err(Failure(anyhow::anyhow!(
                    "{} problem(s) found",
                    problems.len()
                )));
            }
            println!("{} client(s) OK", registry.clients().len());
        }
    }
    Ok(())
}

/// The daemon's state store, opened directly: the state database (the daemon need not run;
/// if it does, it notices the changes within a second), or Redis when `storage.redis` is set
/// (every instance sees the change at once). Files SQLite creates take the state
/// directory's owner, so a root CLI does not lock the daemon's user out.
struct State {
    rt: tokio::runtime::Runtime,
    store: authd::store::AnyStore,
    path: PathBuf,
}

impl Drop for State {
    fn drop(&mut self) {
        // The WAL files may only appear with the first write.
        if let Err(e) = self.adopt_owner() {
            eprintln!("halos-authctl: {e:#}");
        }
    }
}

impl State {
    fn open(config: &Config) -> anyhow::Result<State> {
        let path = config.storage.local.path.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let store = {
            // The Redis client belongs to the runtime it is made in.
            let _rt = rt.enter();
            authd::store::AnyStore::open(config).with_context(|| match &config.storage.redis {
                Some(_) => "cannot use the Redis store (storage.redis)".to_string(),
                None => format!("cannot open the state database {}", path.display()),
            })?
        };
        if let authd::store::AnyStore::Redis(_) = &store {
            use authd::store::Store;
            rt.block_on(store.ping())
                .context("Redis (storage.redis) is unreachable")?;
        }
        let st = State { rt, store, path };
        st.adopt_owner()?;
        Ok(st)
    }

    fn adopt_owner(&self) -> anyhow::Result<()> {
        if !matches!(self.store, authd::store::AnyStore::Local(_)) {
            return Ok(());
        }
        let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(());
        };
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                provision::adopt_owner(&p, dir)?;
            }
        }
        Ok(())
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn seconds(what: &str, text: &str) -> anyhow::Result<i64> {
    let d = authd::duration::parse_duration(text).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    i64::try_from(d.as_secs()).context("duration too large")
}

/// `2026-11-25 04:10:00Z` from a Unix time (UTC; proleptic Gregorian).
fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn token_json(t: &authd::store::ApiToken, now: i64) -> serde_json::Value {
    json!({
        "expired": t.expired(now),
        "id": t.id,
        "user": t.username,
        "name": t.name,
        "host": t.host,
        "path": t.path,
        "created": t.created,
        "expires": t.expires,
        "last_used": t.last_used,
    })
}

fn tokens(config: &Config, file: &UsersFile, cmd: TokenCommand) -> Result<(), Failure> {
    let state = State::open(config)?;
    match cmd {
        TokenCommand::Create {
            user,
            name,
            host,
            path,
            expires,
        } => {
            let ttl = expires
                .as_deref()
                .map(|e| seconds("--expires", e))
                .transpose()?;
            let users = file.load()?;
            let spec = authd::api_token::TokenSpec {
                name,
                host,
                path,
                ttl,
            };
            let new = state.block_on(authd::api_token::create(
                &state.store,
                &users,
                &user,
                spec,
                now(),
            ))?;
            println!("{}", new.token.as_str());
            eprintln!(
                "token {} created for {user}; it is shown only this once",
                new.record.id
            );
        }
        TokenCommand::List { user, json } => {
            use authd::store::Store;
            let all = state.block_on(state.store.api_tokens())?;
            let list: Vec<_> = all
                .iter()
                .filter(|t| user.as_deref().is_none_or(|u| t.username == u))
                .collect();
            if json {
                let v: Vec<_> = list.iter().map(|t| token_json(t, now())).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let opt = |t: Option<i64>, none: &str| t.map_or(none.to_string(), utc);
                let now = now();
                for t in list {
                    println!(
                        "{}\t{}\t{}\thost={}\tpath={}\tcreated={}\texpires={}{}\tlast_used={}",
                        t.id,
                        t.username,
                        t.name,
                        t.host.as_deref().unwrap_or("*"),
                        t.path.as_deref().unwrap_or("*"),
                        utc(t.created),
                        opt(t.expires, "never"),
                        if t.expired(now) { " (expired)" } else { "" },
                        opt(t.last_used, "never"),
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            state.block_on(authd::api_token::revoke(&state.store, &id))?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// A disabled or deleted user's API tokens and login codes go at once, even with the
/// daemon stopped (a running daemon also revokes them when it sees the users file change).
/// The user change is already done: a failure here is a warning.
fn revoke_credentials(config: &Config, user: &str) {
    use authd::store::Store;
    if !config.storage.local.path.exists() {
        return;
    }
    let revoked = State::open(config).and_then(|st| {
        let tokens = st.block_on(st.store.delete_user_api_tokens(user))?;
        let codes = st.block_on(st.store.delete_user_login_codes(user))?;
        Ok(tokens + codes)
    });
    match revoked {
        Ok(0) => {}
        Ok(n) => eprintln!("{n} API token(s) and login code(s) of {user} revoked"),
        Err(e) => eprintln!("halos-authctl: warning: API tokens of {user} not revoked yet: {e:#}"),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(&cli)?;
    let file = UsersFile::new(&config.authentication_backend.file.path);
    let argon2 = &config.authentication_backend.file.password.argon2;
    match cli.command {
        Command::Provision(args) => {
            let opts = provision::ProvisionOptions {
                branding_file: args.branding,
                authelia_users: (!args.no_import).then_some(args.authelia_users),
            };
            let done = provision::provision(&config, &opts)?;
            if done.is_empty() {
                println!("provision: nothing to do");
            }
            for line in done {
                println!("provision: {line}");
            }
        }
        Command::Bridge(_) => unreachable!("handled in main"),
        Command::MigrateFromAuthelia(args) => {
            let n = provision::migrate(&config, &args.from, args.force)?;
            println!(
                "imported {n} users from {} into {} (every password hash kept)",
                args.from.display(),
                config.authentication_backend.file.path.display()
            );
        }
        Command::Check => {
            let db = file.load()?;
            println!(
                "configuration OK; users file {} OK ({} users)",
                config.authentication_backend.file.path.display(),
                db.len()
            );
        }
        Command::Clients(cmd) => clients(&config, cmd)?,
        Command::Token(cmd) => tokens(&config, &file, cmd)?,
        Command::Sessions(SessionsCommand::Revoke { user }) => {
            use authd::store::Store;
            let state = State::open(&config)?;
            let n = state.block_on(state.store.delete_user_sessions(&user))?;
            eprintln!("{n} session(s) of {user} ended");
            println!("{n}");
        }
        Command::HashPassword(src) => {
            let pw = read_password(&src, true)?;
            println!("{}", hash_password(pw.as_bytes(), argon2)?);
        }
        Command::User(cmd) => match cmd {
            UserCommand::List { json } => {
                let db = file.load()?;
                if json {
                    let list: Vec<_> = db.iter().map(|u| user_json(u)).collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for u in db.iter() {
                        println!(
                            "{}\t{}\t{}\t{}{}",
                            u.name,
                            u.displayname,
                            u.email,
                            u.groups.join(","),
                            if u.disabled { "\tdisabled" } else { "" }
                        );
                    }
                }
            }
            UserCommand::Show { name, json } => {
                let db = file.load()?;
                let u = db.get(&name).ok_or(EditError::NotFound(name))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&user_json(u))?);
                } else {
                    println!("name:        {}", u.name);
                    println!("displayname: {}", u.displayname);
                    println!("email:       {}", u.email);
                    println!("groups:      {}", u.groups.join(", "));
                    println!("disabled:    {}", u.disabled);
                    println!("password:    {}", u.digest.algorithm_name());
                }
            }
            UserCommand::Add {
                name,
                display_name,
                email,
                groups,
                disabled,
                password,
            } => {
                let new = NewUser {
                    displayname: display_name.unwrap_or_else(|| name.clone()),
                    name,
                    email,
                    groups,
                    password_digest: String::new(),
                    disabled,
                };
                // Validate before asking for (and hashing) a password.
                UserChange::Add(new.clone()).validate()?;
                let pw = read_password(&password, true)?;
                let change = UserChange::Add(NewUser {
                    password_digest: hash_password(pw.as_bytes(), argon2)?,
                    ..new
                });
                file.apply(&change, |_| Ok(()))?;
                eprintln!("user added");
            }
            UserCommand::Update {
                name,
                display_name,
                email,
                groups,
                no_groups,
                disable,
                enable,
            } => {
                let patch = UserPatch {
                    displayname: display_name,
                    email,
                    groups: if no_groups {
                        Some(Vec::new())
                    } else if groups.is_empty() {
                        None
                    } else {
                        Some(groups)
                    },
                    disabled: if disable {
                        Some(true)
                    } else if enable {
                        Some(false)
                    } else {
                        None
                    },
                    password_digest: None,
                };
                let disabling = patch.disabled == Some(true);
                let change = UserChange::Update(name.clone(), patch);
                file.apply(&change, keep_an_admin(&change))?;
                eprintln!("user updated");
                if disabling {
                    revoke_credentials(&config, &name);
                }
            }
            UserCommand::Passwd { name, password } => {
                if file.load()?.get(&name).is_none() {
                    return Err(EditError::NotFound(name).into());
                }
                let pw = read_password(&password, true)?;
                let change = UserChange::Update(
                    name,
                    UserPatch {
                        password_digest: Some(hash_password(pw.as_bytes(), argon2)?),
                        ..Default::default()
                    },
                );
                file.apply(&change, |_| Ok(()))?;
                eprintln!("password changed");
            }
            UserCommand::LoginCode { name, expires } => {
                let ttl = seconds("--expires", &expires)?;
                let users = file.load()?;
                let state = State::open(&config)?;
                let issued = state.block_on(authd::login_code::issue(
                    &state.store,
                    &users,
                    &name,
                    now(),
                    ttl,
                ))?;
                println!("{}", issued.code.as_str());
                eprintln!(
                    "login code for {name}, valid until {}; it works once, at the portal's /login-code page",
                    utc(issued.expires)
                );
            }
            UserCommand::Del { name } => {
                let change = UserChange::Delete(name.clone());
                file.apply(&change, keep_an_admin(&change))?;
                eprintln!("user deleted");
                revoke_credentials(&config, &name);
            }
        },
    }
    Ok(())
}
