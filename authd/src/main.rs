//! `halos-authd`: the single sign-on daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use authd::config::{Config, DEFAULT_CONFIG_PATH, LogFormat};
use clap::Parser;

/// Single sign-on for appliance Linux images: forward auth for Traefik, Caddy and nginx,
/// a login portal and an OpenID Connect provider, with Authelia-compatible users.
#[derive(Parser, Debug)]
#[command(name = "halos-authd", version, about)]
struct Args {
    /// Configuration file (optional at the default path; absent = built-in defaults).
    #[arg(long, short = 'c', env = "AUTHD_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration and users file, then exit.
    #[arg(long)]
    check: bool,
    /// Run a throw-away demo on 127.0.0.1:9091/sso with a generated demo user.
    #[arg(long, conflicts_with = "config")]
    demo: bool,
    /// State directory for --demo (default: a new temporary directory).
    #[arg(long, requires = "demo", value_name = "DIR")]
    demo_dir: Option<PathBuf>,
    /// Offer the user-management API (org.halos.Auth1) on this bus. The systemd unit
    /// passes `system`; `session` is for tests. Without a reachable bus the daemon logs
    /// an error and serves HTTP anyway.
    #[arg(long, value_enum, default_value_t = authd::dbus::BusKind::None, value_name = "BUS")]
    dbus: authd::dbus::BusKind,
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn env_vars() -> Vec<(String, String)> {
    std::env::vars().collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut source = None;
    let (config, _demo_guard) = if args.demo {
        match authd::demo::prepare(args.demo_dir.as_deref(), &env_vars()) {
            Ok((c, g)) => (c, Some(g)),
            Err(e) => {
                eprintln!("halos-authd: cannot prepare the demo: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let (path, optional) = match &args.config {
            Some(p) => (p.clone(), false),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), true),
        };
        source = Some(authd::daemon::ConfigSource {
            path: path.clone(),
            optional,
        });
        match Config::load(&path, optional, &env_vars()) {
            Ok(c) => (c, None),
            Err(e) => {
                eprintln!("halos-authd: invalid configuration:\n{e}");
                return ExitCode::FAILURE;
            }
        }
    };
    if args.check {
        return match authd::users::edit::UsersFile::new(&config.authentication_backend.file.path)
            .load()
        {
            Ok(db) => {
                println!("configuration OK; {} users", db.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("halos-authd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&config);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("halos-authd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(authd::daemon::run(config, source, args.dbus)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halos-authd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
