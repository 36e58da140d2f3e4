#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
//! Integration tests: one binary (one link) with a module per area.
//! They run the real `halos-authd` / `halos-authctl` binaries on port 0 with temp dirs.

mod api_tokens;
mod bridge;
mod common;
mod config_cli;
mod daemon;
mod dbus;
mod forward_auth;
mod hashes;
mod login_codes;
mod oidc_flow;
mod redis_shared;
mod second_factor;
mod security;
mod snippets;
mod systemd;
mod users_cli;
mod users_reload;
