//! `halos-authd --demo`: a throw-away instance for a first look.

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::users::edit::{NewUser, UserChange, UsersFile};
use crate::users::hash::{hash_password, random_bytes};

/// Keeps a temporary demo directory alive until dropped.
pub enum DemoDir {
    Temp(tempfile::TempDir),
    Kept,
}

/// Writes a users file with a `demo` user (random password, printed) and returns a
/// configuration listening on 127.0.0.1:9091/sso with state in `dir` or a temp dir.
pub fn prepare(dir: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<(Config, DemoDir)> {
    let (path, guard) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.to_path_buf(), DemoDir::Kept)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("halos-authd-demo.")
                .tempdir()?;
            (t.path().to_path_buf(), DemoDir::Temp(t))
        }
    };
    let mut config = Config::default();
    config.authentication_backend.file.path = path.join("users_database.yml");
    config.storage.local.path = path.join("state.sqlite");
    config.identity_providers.oidc.clients_dir = path.join("oidc-clients.d");
    config.hostnames_file.0 = path.join("hostnames.conf");
    std::fs::create_dir_all(&config.identity_providers.oidc.clients_dir)?;
    // A cookie domain a browser on this machine can use: *.localhost resolves to loopback.
    // The portal is plain http (the explicit LAN opt-in), as the demo has no TLS.
    config.session.cookies = vec![crate::config::CookieDomainConfig {
        domain: "halos.localhost".into(),
        authelia_url: url::Url::parse("http://auth.halos.localhost:9091/sso")?,
        default_redirection_url: None,
        name: None,
    }];
    // AUTHD_* overrides apply to the demo too (e.g. another port).
    let errors = config.apply_env(env);
    if !errors.is_empty() {
        anyhow::bail!("{}", crate::config::ConfigErrors(errors));
    }

    let file = UsersFile::new(&config.authentication_backend.file.path);
    let existing = file.load()?;
    if existing.get("demo").is_none() {
        let mut raw = [0u8; 9];
        random_bytes(&mut raw);
        let password = hex::encode(raw);
        let digest = hash_password(
            password.as_bytes(),
            &config.authentication_backend.file.password.argon2,
        )?;
        file.apply(
            &UserChange::Add(NewUser {
                name: "demo".into(),
                displayname: "Demo User".into(),
                email: "demo@halos.local".into(),
                groups: vec!["admins".into(), "users".into()],
                password_digest: digest,
                disabled: false,
            }),
            |_| Ok(()),
        )?;
        println!("demo user: demo");
        println!("password:  {password}");
    } else {
        println!(
            "demo user: demo (password unchanged from the earlier run in {})",
            path.display()
        );
    }
    println!("state dir: {}", path.display());
    if let crate::config::ListenAddress::Tcp(a) = &config.server.address.listen {
        println!(
            "health:    curl http://{a}{}/api/health",
            config.server.address.path_prefix
        );
        if a.port() == 9091 {
            println!("sign in:   http://auth.halos.localhost:9091/sso/");
        }
    }
    Ok((config, guard))
}
