//! halos-authd: single sign-on for appliance Linux images.
//!
//! Layout: `config`, `users` and `yaml` are the domain core (no HTTP, no storage
//! engine); `http` holds the thin axum handlers; `daemon` wires it all together.

pub mod api_token;
pub mod auth;
pub mod authz;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod demo;
pub mod duration;
pub mod hostnames;
pub mod http;
pub mod login_code;
pub mod memory;
pub mod metrics;
pub mod oidc;
pub mod reload;
pub mod second_factor;
pub mod secret;
pub mod site;
pub mod store;
pub mod systemd;
pub mod users;
pub mod watch;
pub mod yaml;
