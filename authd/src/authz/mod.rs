//! Authorization domain: Authelia-style `access_control` rules and redirect-target safety.
//!
//! Pure code: no HTTP types and no I/O. The forward-auth handlers build an
//! [`AccessRequest`] from the (trusted) `X-Forwarded-*` / `X-Original-*` headers, ask
//! [`AccessControl::check`] for the [`Requirement`], and use [`SafeRedirect`] to pick the
//! cookie domain and to vet every redirect target (`rd`, `targetURL`, logout targets).

pub mod access;
pub mod redirect;
pub mod target;

pub use access::{AccessControl, AccessRequest, Requirement, Subject, normalize_path};
pub use redirect::{MAX_REDIRECT_LEN, RedirectDomain, SafeRedirect};
