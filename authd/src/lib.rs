//! halos-authd: single sign-on for appliance Linux images.
//!
//! Layout: `config`, `users` and `yaml` are the domain core (no HTTP, no storage
//! engine); `http` holds the thin axum handlers; `daemon` wires it all together.

pub mod authz;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod duration;
pub mod hostnames;
pub mod http;
pub mod secret;
pub mod systemd;
pub mod users;
pub mod watch;
pub mod yaml;
