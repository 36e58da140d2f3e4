//! `access_control`: Authelia's rule engine, compiled once and evaluated on every
//! forward-auth request.
//!
//! Semantics (Authelia 4.38/4.39, `internal/authorization`):
//! - rules are tried in order; the first rule whose every criterion matches wins; no match
//!   means `default_policy`;
//! - `domain` and `domain_regex` are ORed with each other, entries inside any criterion are
//!   ORed, `subject` is an OR of AND-groups;
//! - `domain` entries are lower-cased; `*.example.com` matches any name strictly below
//!   `example.com` (not the apex); `{user}.example.com` / `{group}.example.com` match the
//!   user's name / one of their groups (case-insensitively);
//! - `domain_regex` and `resources` are unanchored regexes; the named groups `User` and
//!   `Group` must equal (case-insensitively) the username / one of the groups;
//! - `resources` see the request path, percent-decoded and dot-segment-cleaned (Go's
//!   `path.Clean`, trailing slash kept), plus `?` and the raw query ([`normalize_path`]);
//! - `methods` compare case-insensitively; `networks` are CIDRs, single addresses or names
//!   from `definitions.network`, matched against the canonical client address (an
//!   IPv4-mapped IPv6 address is its IPv4 address, in requests and in rules alike);
//! - `user:NAME` matches the username exactly, `group:NAME` one of the groups exactly,
//!   `oauth2:client:ID` never matches a user;
//! - an anonymous request matches every subject criterion (a rule that depends on the user
//!   — a `subject`, a `{user}`/`{group}` domain or a `User`/`Group` regex group — matches as
//!   far as its other criteria allow). Such a match is reported with
//!   [`Requirement::identity_required`]: the caller must send the user to log in (never
//!   403, even for `deny`) and decide again once the identity is known.
//!
//! `check` does not allocate unless the host has upper-case letters, the path needs
//! cleaning, or a `User`/`Group` regex group has to be captured for a known user.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use regex::Regex;

use crate::config::{
    AccessControlConfig, AccessRuleConfig, Cidr, DefinitionsConfig, IdentityHeaders, Policy,
};

/// What is being accessed, as the proxy reported it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// Target host: lower-case, without port (upper case and one trailing dot are tolerated).
    pub host: &'a str,
    /// Path and query as received (`/a/b?c=d`), without fragment. Cleaned internally.
    pub path: &'a str,
    /// HTTP method of the original request.
    pub method: &'a str,
    /// Client address (the first trusted `X-Forwarded-For` hop, else the TCP peer). Only
    /// rules with `networks` read it ([`AccessControl::uses_networks`]).
    pub client_ip: IpAddr,
}

/// Who is asking; `None` in [`AccessControl::check`] means anonymous.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
}

/// The outcome of [`AccessControl::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement<'a> {
    /// Policy of the matching rule, or the default policy.
    pub policy: Policy,
    /// Anonymous request matched a rule that depends on the user: log in first, then ask again.
    pub identity_required: bool,
    /// Identity header names to emit: the rule's, or the global ones.
    pub headers: &'a IdentityHeaders,
    /// Index (0-based, in configuration order) of the matching rule; `None` = default policy.
    pub rule: Option<usize>,
}

/// Compiled `access_control` section.
#[derive(Debug)]
pub struct AccessControl {
    default_policy: Policy,
    headers: IdentityHeaders,
    rules: Vec<Rule>,
    /// Some rule has `networks`: only then does [`AccessRequest::client_ip`] matter.
    uses_networks: bool,
}

#[derive(Debug)]
struct Rule {
    domains: Vec<DomainMatcher>,
    resources: Vec<Pattern>,
    methods: Vec<String>,
    networks: Vec<IpNet>,
    subjects: Vec<Vec<SubjectMatcher>>,
    has_subjects: bool,
    policy: Policy,
    headers: Option<IdentityHeaders>,
}

#[derive(Debug)]
enum DomainMatcher {
    Exact(String),
    /// `*.example.com` → `.example.com`.
    Wildcard(String),
    /// `{user}.example.com` → `.example.com`.
    User(String),
    /// `{group}.example.com` → `.example.com`.
    Group(String),
    Regex(Pattern),
}

#[derive(Debug)]
struct Pattern {
    re: Regex,
    user: Option<usize>,
    group: Option<usize>,
}

#[derive(Debug)]
enum SubjectMatcher {
    User(String),
    Group(String),
    /// `oauth2:client:ID`: only an OAuth 2.0 client credential could match; a user never does.
    Client,
}

impl AccessControl {
    /// Compiles the rules (regexes once, domains lower-cased, network names resolved).
    pub fn compile(
        config: &AccessControlConfig,
        definitions: &DefinitionsConfig,
    ) -> Result<AccessControl, String> {
        validate_headers(&config.identity_headers)
            .map_err(|e| format!("access_control.identity_headers: {e}"))?;
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Rule::compile(r, definitions).map_err(|e| format!("access_control.rules[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccessControl {
            default_policy: config.default_policy,
            headers: config.identity_headers.clone(),
            uses_networks: rules.iter().any(|r| !r.networks.is_empty()),
            rules,
        })
    }

    /// The policy, and whether an identity is needed first, for one request.
    pub fn check<'s>(
        &'s self,
        req: &AccessRequest<'_>,
        subject: Option<&Subject<'_>>,
    ) -> Requirement<'s> {
        let host = canonical_host(req.host);
        let path = normalize_path(req.path);
        let ip = req.client_ip.to_canonical();
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(&host, &path, req.method, &ip, subject) {
                return Requirement {
                    policy: rule.policy,
                    identity_required: subject.is_none() && rule.has_subjects,
                    headers: rule.headers.as_ref().unwrap_or(&self.headers),
                    rule: Some(i),
                };
            }
        }
        Requirement {
            policy: self.default_policy,
            identity_required: false,
            headers: &self.headers,
            rule: None,
        }
    }

    /// Whether any rule matches on the client address (`networks`). When none does, the
    /// caller may skip working out [`AccessRequest::client_ip`] from `X-Forwarded-For`.
    pub fn uses_networks(&self) -> bool {
        self.uses_networks
    }

    pub fn default_policy(&self) -> Policy {
        self.default_policy
    }

    /// The global identity header names.
    pub fn identity_headers(&self) -> &IdentityHeaders {
        &self.headers
    }

    /// True when the default policy or any rule is `two_factor` (Authelia's
    /// `IsSecondFactorEnabled`: the portal offers second-factor enrolment).
    pub fn uses_two_factor(&self) -> bool {
        self.default_policy == Policy::TwoFactor
            || self.rules.iter().any(|r| r.policy == Policy::TwoFactor)
    }
}

impl Rule {
    fn compile(r: &AccessRuleConfig, definitions: &DefinitionsConfig) -> Result<Rule, String> {
        let mut domains = Vec::with_capacity(r.domain.0.len() + r.domain_regex.0.len());
        for d in &r.domain.0 {
            let d = d.trim().to_lowercase();
            let m = if let Some(rest) = d.strip_prefix('*') {
                DomainMatcher::Wildcard(rest.to_string())
            } else if let Some(rest) = d.strip_prefix("{user}") {
                DomainMatcher::User(rest.to_string())
            } else if let Some(rest) = d.strip_prefix("{group}") {
                DomainMatcher::Group(rest.to_string())
            } else {
                DomainMatcher::Exact(d.clone())
            };
            match &m {
                DomainMatcher::Exact(s) if s.is_empty() => return Err("empty domain".into()),
                DomainMatcher::Wildcard(s) | DomainMatcher::User(s) | DomainMatcher::Group(s)
                    if !s.starts_with('.') || s.len() < 2 =>
                {
                    return Err(format!(
                        "domain {d:?}: a wildcard or placeholder must be followed by \".name\""
                    ));
                }
                _ => {}
            }
            domains.push(m);
        }
        for re in &r.domain_regex.0 {
            domains.push(DomainMatcher::Regex(
                Pattern::compile(re).map_err(|e| format!("domain_regex: {e}"))?,
            ));
        }
        let resources = r
            .resources
            .0
            .iter()
            .map(|re| Pattern::compile(re).map_err(|e| format!("resources: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut methods = Vec::with_capacity(r.methods.0.len());
        for m in &r.methods.0 {
            let m = m.trim();
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                return Err(format!("methods: {m:?} is not an HTTP method"));
            }
            methods.push(m.to_ascii_uppercase());
        }
        let mut networks = Vec::new();
        for n in &r.networks.0 {
            if let Some(list) = definitions.network.get(n.trim()) {
                networks.extend(list.iter().map(|c| canonical_net(c.0)));
            } else {
                let c = Cidr::parse(n).map_err(|_| {
                    format!("networks: {n:?} is neither a CIDR nor a name in definitions.network")
                })?;
                networks.push(canonical_net(c.0));
            }
        }
        let mut subjects = Vec::with_capacity(r.subject.0.len());
        for group in &r.subject.0 {
            let mut all = Vec::with_capacity(group.len());
            for s in group {
                let s = s.trim();
                let m = if let Some(name) = s.strip_prefix("user:") {
                    SubjectMatcher::User(name.trim_matches(' ').to_string())
                } else if let Some(name) = s.strip_prefix("group:") {
                    SubjectMatcher::Group(name.trim_matches(' ').to_string())
                } else if s.starts_with("oauth2:client:") {
                    SubjectMatcher::Client
                } else {
                    return Err(format!(
                        "subject: {s:?} must start with user:, group: or oauth2:client:"
                    ));
                };
                all.push(m);
            }
            // Authelia drops empty AND-groups.
            if !all.is_empty() {
                subjects.push(all);
            }
        }
        let has_subjects = !subjects.is_empty()
            || domains.iter().any(|d| match d {
                DomainMatcher::User(_) | DomainMatcher::Group(_) => true,
                DomainMatcher::Regex(p) => p.has_subject_groups(),
                DomainMatcher::Exact(_) | DomainMatcher::Wildcard(_) => false,
            })
            || resources.iter().any(Pattern::has_subject_groups);
        if r.policy == Policy::Bypass && has_subjects {
            return Err(
                "a bypass rule cannot depend on the user (subject, {user}/{group} \
                 domain, or a User/Group regex group)"
                    .into(),
            );
        }
        if let Some(h) = &r.identity_headers {
            validate_headers(h).map_err(|e| format!("identity_headers: {e}"))?;
        }
        Ok(Rule {
            domains,
            resources,
            methods,
            networks,
            subjects,
            has_subjects,
            policy: r.policy,
            headers: r.identity_headers.clone(),
        })
    }

    fn matches(
        &self,
        host: &str,
        path: &str,
        method: &str,
        ip: &IpAddr,
        subject: Option<&Subject<'_>>,
    ) -> bool {
        (self.domains.is_empty() || self.domains.iter().any(|d| d.matches(host, subject)))
            && (self.methods.is_empty()
                || self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && (self.networks.is_empty() || self.networks.iter().any(|n| n.contains(ip)))
            && self.subject_matches(subject)
            && (self.resources.is_empty()
                || self.resources.iter().any(|p| p.matches(path, subject)))
    }

    fn subject_matches(&self, subject: Option<&Subject<'_>>) -> bool {
        match subject {
            // Anonymous "matches" so that the caller can ask for a login.
            None => true,
            Some(s) => {
                self.subjects.is_empty()
                    || self
                        .subjects
                        .iter()
                        .any(|all| all.iter().all(|m| m.matches(s)))
            }
        }
    }
}

impl DomainMatcher {
    fn matches(&self, host: &str, subject: Option<&Subject<'_>>) -> bool {
        match self {
            DomainMatcher::Exact(name) => host == name,
            DomainMatcher::Wildcard(suffix) => strictly_below(host, suffix),
            DomainMatcher::User(suffix) => match subject {
                None => strictly_below(host, suffix),
                Some(s) => {
                    strictly_below(host, suffix)
                        && fold_eq(&host[..host.len() - suffix.len()], s.username)
                }
            },
            DomainMatcher::Group(suffix) => match subject {
                None => strictly_below(host, suffix),
                Some(s) => match host.find('.') {
                    Some(i) if &host[i..] == suffix.as_str() => {
                        s.groups.iter().any(|g| fold_eq(g, &host[..i]))
                    }
                    _ => false,
                },
            },
            DomainMatcher::Regex(p) => p.matches(host, subject),
        }
    }
}

impl Pattern {
    fn compile(re: &str) -> Result<Pattern, String> {
        let re = Regex::new(re).map_err(|e| format!("invalid regex {re:?}: {e}"))?;
        let user = re.capture_names().position(|n| n == Some("User"));
        let group = re.capture_names().position(|n| n == Some("Group"));
        Ok(Pattern { re, user, group })
    }

    fn has_subject_groups(&self) -> bool {
        self.user.is_some() || self.group.is_some()
    }

    fn matches(&self, input: &str, subject: Option<&Subject<'_>>) -> bool {
        let s = match subject {
            Some(s) if self.has_subject_groups() => s,
            // Anonymous, or no named groups: a plain match decides.
            _ => return self.re.is_match(input),
        };
        let Some(caps) = self.re.captures(input) else {
            return false;
        };
        let cap = |i: usize| caps.get(i).map_or("", |m| m.as_str());
        if let Some(u) = self.user
            && !fold_eq(s.username, cap(u))
        {
            return false;
        }
        if let Some(g) = self.group
            && !s.groups.iter().any(|x| fold_eq(x, cap(g)))
        {
            return false;
        }
        true
    }
}

impl SubjectMatcher {
    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            SubjectMatcher::User(name) => s.username == name,
            SubjectMatcher::Group(name) => s.groups.iter().any(|g| g == name),
            SubjectMatcher::Client => false,
        }
    }
}

/// `host` ends with `suffix` (which starts with a dot) and has at least one more character.
fn strictly_below(host: &str, suffix: &str) -> bool {
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// Case-insensitive comparison (Unicode simple lower-casing), without allocating.
fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

/// Lower-cases the host and drops one trailing dot; borrows when nothing changes.
fn canonical_host(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) || !host.is_ascii() {
        Cow::Owned(host.to_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps.
fn canonical_net(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(net.trunc());
    }
    n
}

fn validate_headers(h: &IdentityHeaders) -> Result<(), String> {
    for name in [&h.user, &h.groups, &h.name, &h.email] {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            return Err(format!("{name:?} is not a valid HTTP header name"));
        }
    }
    Ok(())
}

/// The string `resources` regexes see: the path percent-decoded and cleaned like Go's
/// `path.Clean` (rooted, `//` collapsed, `.` and `..` resolved, a trailing `/` kept), then
/// `?` and the query exactly as received. This is what Authelia matches
/// (`utils.URLPathFullClean`), so `/public/../admin` and `/public/%2e%2e/admin` are judged
/// as `/admin`. Borrows the input when it is already clean.
pub fn normalize_path(raw: &str) -> Cow<'_, str> {
    let (path, query) = match raw.bytes().position(|b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    if is_clean_path(path) {
        return Cow::Borrowed(raw);
    }
    let decoded = percent_decode(path);
    let mut out = String::with_capacity(raw.len() + 1);
    let mut stack: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    // Root, or a trailing slash kept (Authelia re-appends what path.Clean drops).
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Cow::Owned(out)
}

fn is_clean_path(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// Decodes `%XX` escapes; invalid escapes stay literal, invalid UTF-8 becomes U+FFFD.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_yaml;

    fn compile(rules: &str) -> Result<AccessControl, String> {
        let cfg: AccessControlConfig = parse_yaml(
            &format!("default_policy: deny\nrules:\n{rules}"),
            "test",
            1 << 20,
        )
        .map_err(|e| e.reason)?;
        let defs: DefinitionsConfig = parse_yaml(
            "network:\n  internal: ['10.0.0.0/8', '192.168.0.0/16']\n  vpn: ['fd00::/8']\n",
            "test",
            1 << 20,
        )
        .map_err(|e| e.reason)?;
        AccessControl::compile(&cfg, &defs)
    }

    type User = Option<(&'static str, &'static [&'static str])>;
    type Want = (Policy, bool, Option<usize>);
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        User,
        Want,
    );

    const H: &str = "app.halos.local";
    const IP: &str = "192.168.1.5";
    const ANON: User = None;
    const JOHN: User = Some(("john", &["admins", "dev"]));
    const BOB: User = Some(("bob", &["users"]));
    const ONE: Want = (Policy::OneFactor, false, Some(0));
    const DEF: Want = (Policy::Deny, false, None);
    const LOGIN: Want = (Policy::OneFactor, true, Some(0));

    /// One row per criterion and per subtlety:
    /// (name, rules, host, path, method, client ip, user, (policy, identity_required, rule)).
    #[rustfmt::skip]
    const CASES: &[Row] = &[
        ("no rules: default policy", "  []", H, "/", "GET", IP, ANON, DEF),
        ("domain: exact", "  - {domain: app.halos.local, policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("domain: mismatch", "  - {domain: app.halos.local, policy: one_factor}", "other.halos.local", "/", "GET", IP, ANON, DEF),
        ("domain: rule lower-cased", "  - {domain: App.HALOS.Local, policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("domain: host lower-cased", "  - {domain: app.halos.local, policy: one_factor}", "APP.Halos.LOCAL", "/", "GET", IP, ANON, ONE),
        ("domain: host trailing dot", "  - {domain: app.halos.local, policy: one_factor}", "app.halos.local.", "/", "GET", IP, ANON, ONE),
        ("domain: no suffix confusion", "  - {domain: app.halos.local, policy: one_factor}", "app.halos.local.evil.example", "/", "GET", IP, ANON, DEF),
        ("domain: list is ORed", "  - {domain: [a.halos.local, app.halos.local], policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("wildcard: one level", "  - {domain: '*.halos.local', policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("wildcard: two levels", "  - {domain: '*.halos.local', policy: one_factor}", "a.b.halos.local", "/", "GET", IP, ANON, ONE),
        ("wildcard: not the apex", "  - {domain: '*.halos.local', policy: one_factor}", "halos.local", "/", "GET", IP, ANON, DEF),
        ("wildcard: label boundary", "  - {domain: '*.halos.local', policy: one_factor}", "evilhalos.local", "/", "GET", IP, ANON, DEF),
        ("domain_regex: match", r"  - {domain_regex: '^app\d*\.halos\.local$', policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("domain_regex: mismatch", r"  - {domain_regex: '^app\d+\.halos\.local$', policy: one_factor}", H, "/", "GET", IP, ANON, DEF),
        ("domain_regex: sees the lower-cased host", r"  - {domain_regex: '^app\.halos', policy: one_factor}", "APP.HALOS.LOCAL", "/", "GET", IP, ANON, ONE),
        ("domain OR domain_regex", r"  - {domain: x.halos.local, domain_regex: '^app\.', policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("resources: match", "  - {domain: app.halos.local, resources: '^/api([/?].*)?$', policy: one_factor}", H, "/api/v1?x=1", "GET", IP, ANON, ONE),
        ("resources: mismatch", "  - {domain: app.halos.local, resources: '^/api([/?].*)?$', policy: one_factor}", H, "/apix", "GET", IP, ANON, DEF),
        ("resources: query included", "  - {domain: app.halos.local, resources: '[?&]token=', policy: one_factor}", H, "/x?token=1", "GET", IP, ANON, ONE),
        ("resources: list is ORed", "  - {domain: app.halos.local, resources: ['^/y', '^/x$'], policy: one_factor}", H, "/x", "GET", IP, ANON, ONE),
        ("resources: dot segments cleaned", "  - {domain: app.halos.local, resources: '^/public/', policy: one_factor}", H, "/public/../admin", "GET", IP, ANON, DEF),
        ("resources: encoded dot segments cleaned", "  - {domain: app.halos.local, resources: '^/public/', policy: one_factor}", H, "/public/%2e%2E/admin", "GET", IP, ANON, DEF),
        ("resources: encoded slash decoded", "  - {domain: app.halos.local, resources: '^/admin$', policy: one_factor}", H, "/x%2f..%2Fadmin", "GET", IP, ANON, ONE),
        ("resources: double slash collapsed", "  - {domain: app.halos.local, resources: '^/admin/$', policy: one_factor}", H, "//admin/", "GET", IP, ANON, ONE),
        ("resources: query cannot fake the path", "  - {domain: app.halos.local, resources: '^/public', policy: one_factor}", H, "/admin?x=/public", "GET", IP, ANON, DEF),
        ("methods: match", "  - {domain: app.halos.local, methods: [PUT, POST], policy: one_factor}", H, "/", "POST", IP, ANON, ONE),
        ("methods: case-insensitive", "  - {domain: app.halos.local, methods: POST, policy: one_factor}", H, "/", "post", IP, ANON, ONE),
        ("methods: mismatch", "  - {domain: app.halos.local, methods: POST, policy: one_factor}", H, "/", "GET", IP, ANON, DEF),
        ("networks: CIDR", "  - {domain: app.halos.local, networks: 192.168.0.0/16, policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("networks: mismatch", "  - {domain: app.halos.local, networks: 192.168.0.0/16, policy: one_factor}", H, "/", "GET", "10.1.1.1", ANON, DEF),
        ("networks: single address", "  - {domain: app.halos.local, networks: 192.168.1.5, policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("networks: named definition", "  - {domain: app.halos.local, networks: internal, policy: one_factor}", H, "/", "GET", "10.9.8.7", ANON, ONE),
        ("networks: list ORed, IPv6", "  - {domain: app.halos.local, networks: [172.16.0.0/12, vpn], policy: one_factor}", H, "/", "GET", "fd12::1", ANON, ONE),
        ("networks: IPv4-mapped client", "  - {domain: app.halos.local, networks: 192.168.0.0/16, policy: one_factor}", H, "/", "GET", "::ffff:192.168.1.5", ANON, ONE),
        ("networks: IPv4-mapped rule", "  - {domain: app.halos.local, networks: '::ffff:10.0.0.0/104', policy: one_factor}", H, "/", "GET", "10.1.2.3", ANON, ONE),
        ("subject: user", "  - {domain: app.halos.local, subject: 'user:john', policy: one_factor}", H, "/", "GET", IP, JOHN, ONE),
        ("subject: other user", "  - {domain: app.halos.local, subject: 'user:john', policy: one_factor}", H, "/", "GET", IP, BOB, DEF),
        ("subject: user exact case", "  - {domain: app.halos.local, subject: 'user:john', policy: one_factor}", H, "/", "GET", IP, Some(("John", &[])), DEF),
        ("subject: spaces trimmed", "  - {domain: app.halos.local, subject: 'user: john ', policy: one_factor}", H, "/", "GET", IP, JOHN, ONE),
        ("subject: group", "  - {domain: app.halos.local, subject: 'group:admins', policy: one_factor}", H, "/", "GET", IP, JOHN, ONE),
        ("subject: group missing", "  - {domain: app.halos.local, subject: 'group:admins', policy: one_factor}", H, "/", "GET", IP, BOB, DEF),
        ("subject: AND needs all", "  - {domain: app.halos.local, subject: [['group:admins', 'group:ops']], policy: one_factor}", H, "/", "GET", IP, JOHN, DEF),
        ("subject: AND all present", "  - {domain: app.halos.local, subject: [['group:admins', 'group:dev']], policy: one_factor}", H, "/", "GET", IP, JOHN, ONE),
        ("subject: OR of ANDs", "  - {domain: app.halos.local, subject: ['user:x', ['group:users', 'user:bob']], policy: one_factor}", H, "/", "GET", IP, BOB, ONE),
        ("subject: oauth2 client never a user", "  - {domain: app.halos.local, subject: 'oauth2:client:john', policy: one_factor}", H, "/", "GET", IP, JOHN, DEF),
        ("subject: empty AND-group ignored", "  - {domain: app.halos.local, subject: [[]], policy: one_factor}", H, "/", "GET", IP, ANON, ONE),
        ("anonymous + subject: identity required", "  - {domain: app.halos.local, subject: 'group:admins', policy: one_factor}", H, "/", "GET", IP, ANON, LOGIN),
        ("anonymous + deny with subject: login, not 403", "  - {domain: app.halos.local, subject: 'group:admins', policy: deny}", H, "/", "GET", IP, ANON, (Policy::Deny, true, Some(0))),
        ("anonymous + deny without subject", "  - {domain: app.halos.local, policy: deny}", H, "/", "GET", IP, ANON, (Policy::Deny, false, Some(0))),
        ("anonymous + subject, other criteria fail", "  - {domain: app.halos.local, methods: POST, subject: 'user:john', policy: one_factor}", H, "/", "GET", IP, ANON, DEF),
        ("known user + deny with subject", "  - {domain: app.halos.local, subject: 'user:john', policy: deny}", H, "/", "GET", IP, JOHN, (Policy::Deny, false, Some(0))),
        ("first match wins", "  - {domain: app.halos.local, policy: bypass}\n  - {domain: app.halos.local, policy: two_factor}", H, "/", "GET", IP, ANON, (Policy::Bypass, false, Some(0))),
        ("failed criterion falls through", "  - {domain: app.halos.local, methods: POST, policy: bypass}\n  - {domain: '*.halos.local', policy: two_factor}", H, "/", "GET", IP, ANON, (Policy::TwoFactor, false, Some(1))),
        ("failed subject falls through", "  - {domain: app.halos.local, subject: 'user:john', policy: deny}\n  - {domain: '*.halos.local', policy: two_factor}", H, "/", "GET", IP, BOB, (Policy::TwoFactor, false, Some(1))),
        ("every criterion must match", "  - {domain: app.halos.local, subject: 'user:john', networks: 192.168.0.0/16, policy: one_factor}", H, "/", "GET", "10.0.0.1", JOHN, DEF),
        ("{user}: own name", "  - {domain: '{user}.halos.local', policy: one_factor}", "john.halos.local", "/", "GET", IP, JOHN, ONE),
        ("{user}: case-insensitive", "  - {domain: '{user}.halos.local', policy: one_factor}", "john.halos.local", "/", "GET", IP, Some(("John", &[])), ONE),
        ("{user}: someone else's", "  - {domain: '{user}.halos.local', policy: one_factor}", "john.halos.local", "/", "GET", IP, BOB, DEF),
        ("{user}: anonymous asks for identity", "  - {domain: '{user}.halos.local', policy: one_factor}", "john.halos.local", "/", "GET", IP, ANON, LOGIN),
        ("{user}: anonymous, not the apex", "  - {domain: '{user}.halos.local', policy: one_factor}", "halos.local", "/", "GET", IP, ANON, DEF),
        ("{group}: member", "  - {domain: '{group}.halos.local', policy: one_factor}", "dev.halos.local", "/", "GET", IP, JOHN, ONE),
        ("{group}: case-insensitive", "  - {domain: '{group}.halos.local', policy: one_factor}", "dev.halos.local", "/", "GET", IP, Some(("x", &["DEV"])), ONE),
        ("{group}: not a member", "  - {domain: '{group}.halos.local', policy: one_factor}", "dev.halos.local", "/", "GET", IP, BOB, DEF),
        ("{group}: only the first label", "  - {domain: '{group}.halos.local', policy: one_factor}", "x.dev.halos.local", "/", "GET", IP, JOHN, DEF),
        ("{group}: anonymous asks for identity", "  - {domain: '{group}.halos.local', policy: one_factor}", "dev.halos.local", "/", "GET", IP, ANON, LOGIN),
        ("regex User group", r"  - {domain_regex: '^(?P<User>\w+)\.halos\.local$', policy: one_factor}", "john.halos.local", "/", "GET", IP, JOHN, ONE),
        ("regex User group, case-insensitive", r"  - {domain_regex: '^(?P<User>\w+)\.halos\.local$', policy: one_factor}", "john.halos.local", "/", "GET", IP, Some(("JOHN", &[])), ONE),
        ("regex User group, other user", r"  - {domain_regex: '^(?P<User>\w+)\.halos\.local$', policy: one_factor}", "john.halos.local", "/", "GET", IP, BOB, DEF),
        ("regex User group, anonymous", r"  - {domain_regex: '^(?P<User>\w+)\.halos\.local$', policy: one_factor}", "john.halos.local", "/", "GET", IP, ANON, LOGIN),
        ("regex Group group", r"  - {domain_regex: '^g-(?P<Group>\w+)\.halos\.local$', policy: one_factor}", "g-admins.halos.local", "/", "GET", IP, JOHN, ONE),
        ("regex Group group, not a member", r"  - {domain_regex: '^g-(?P<Group>\w+)\.halos\.local$', policy: one_factor}", "g-admins.halos.local", "/", "GET", IP, BOB, DEF),
        ("resources User group", r"  - {domain: app.halos.local, resources: '^/home/(?P<User>\w+)/', policy: one_factor}", H, "/home/john/x", "GET", IP, JOHN, ONE),
        ("resources User group, other user", r"  - {domain: app.halos.local, resources: '^/home/(?P<User>\w+)/', policy: one_factor}", H, "/home/john/x", "GET", IP, BOB, DEF),
        ("resources User group, anonymous", r"  - {domain: app.halos.local, resources: '^/home/(?P<User>\w+)/', policy: one_factor}", H, "/home/john/x", "GET", IP, ANON, LOGIN),
    ];

    #[test]
    fn access_control_table() {
        let mut failures = Vec::new();
        for (name, rules, host, path, method, ip, user, want) in CASES {
            let ac = compile(rules).unwrap_or_else(|e| panic!("{name}: {e}"));
            let groups: Vec<String> = user
                .map(|(_, g)| g.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let subject = user.map(|(u, _)| Subject {
                username: u,
                groups: &groups,
            });
            let req = AccessRequest {
                host,
                path,
                method,
                client_ip: ip.parse().expect("ip"),
            };
            let got = ac.check(&req, subject.as_ref());
            if (got.policy, got.identity_required, got.rule) != *want {
                failures.push(format!(
                    "{name}: got {:?}/{}/{:?}, want {want:?}",
                    got.policy, got.identity_required, got.rule
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn headers_come_from_the_rule_or_the_global_section() {
        let cfg: AccessControlConfig = parse_yaml(
            "default_policy: one_factor\n\
             identity_headers: {user: X-User, groups: X-Groups, name: X-Name, email: X-Email}\n\
             rules:\n\
             - domain: grafana.halos.local\n\
             \x20 policy: one_factor\n\
             \x20 identity_headers: {user: X-WEBAUTH-USER, groups: X-WEBAUTH-GROUPS, name: X-WEBAUTH-NAME, email: X-WEBAUTH-EMAIL}\n",
            "test",
            1 << 20,
        )
        .expect("yaml");
        let ac = AccessControl::compile(&cfg, &DefinitionsConfig::default()).expect("compile");
        let req = |host| AccessRequest {
            host,
            path: "/",
            method: "GET",
            client_ip: "127.0.0.1".parse().expect("ip"),
        };
        assert_eq!(
            ac.check(&req("grafana.halos.local"), None).headers.user,
            "X-WEBAUTH-USER"
        );
        let other = ac.check(&req("other.halos.local"), None);
        assert_eq!(other.headers.user, "X-User");
        assert_eq!(other.rule, None);
        assert_eq!(ac.identity_headers().groups, "X-Groups");
        assert_eq!(ac.default_policy(), Policy::OneFactor);
    }

    #[test]
    fn compile_errors() {
        #[rustfmt::skip]
        let cases = [
            ("invalid domain_regex", r"  - {domain_regex: '(', policy: one_factor}"),
            ("invalid resources regex", "  - {domain: a.b, resources: '[', policy: one_factor}"),
            ("unknown network name", "  - {domain: a.b, networks: nowhere, policy: one_factor}"),
            ("bad subject prefix", "  - {domain: a.b, subject: 'role:x', policy: one_factor}"),
            ("bad method", "  - {domain: a.b, methods: 'GE T', policy: one_factor}"),
            ("bypass with subject", "  - {domain: a.b, subject: 'user:x', policy: bypass}"),
            ("bypass with {user}", "  - {domain: '{user}.a.b', policy: bypass}"),
            ("bypass with {group}", "  - {domain: '{group}.a.b', policy: bypass}"),
            ("bypass with regex User group", r"  - {domain_regex: '^(?P<User>\w+)\.a$', policy: bypass}"),
            ("bypass with resources Group group", r"  - {domain: a.b, resources: '^/(?P<Group>\w+)', policy: bypass}"),
            ("wildcard without dot", "  - {domain: '*a.b', policy: one_factor}"),
            ("empty domain", "  - {domain: '', policy: one_factor}"),
            ("bad header name", "  - {domain: a.b, policy: one_factor, identity_headers: {user: 'X User', groups: G, name: N, email: E}}"),
        ];
        for (name, rules) in cases {
            let err = compile(rules).expect_err(name);
            assert!(
                err.starts_with("access_control.rules[0]: "),
                "{name}: {err}"
            );
        }
        compile("  - {domain: a.b, networks: ['10.0.0.0/8', '::1', internal], policy: one_factor}")
            .expect("valid networks");
    }

    #[test]
    fn two_factor_detection() {
        assert!(
            !compile("  - {domain: a.b, policy: one_factor}")
                .expect("c")
                .uses_two_factor()
        );
        assert!(
            compile("  - {domain: a.b, policy: two_factor}")
                .expect("c")
                .uses_two_factor()
        );
    }

    #[test]
    fn normalize_path_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, bool)] = &[
            // (input, expected, borrowed)
            ("/", "/", true),
            ("/a/b?c=d", "/a/b?c=d", true),
            ("/a/b/", "/a/b/", true),
            ("/a/./b", "/a/b", false),
            ("/a/../b", "/b", false),
            ("/../../b", "/b", false),
            ("/a/b/..", "/a", false),
            ("/a/b/../", "/a/", false),
            ("/a/..", "/", false),
            ("//a//b", "/a/b", false),
            ("//", "/", false),
            ("", "/", false),
            ("a/b", "/a/b", false),
            ("/%61%2Fb", "/a/b", false),
            ("/a/%2e%2e/b", "/b", false),
            ("/a%zz/b", "/a%zz/b", false),
            ("/a%", "/a%", false),
            ("/p/../q?x=/../y", "/q?x=/../y", false),
            ("/%e2%82%ac", "/\u{20ac}", false),
            ("/%ff", "/\u{fffd}", false),
        ];
        for (input, want, borrowed) in cases {
            let got = normalize_path(input);
            assert_eq!(got, *want, "{input:?}");
            assert_eq!(
                matches!(got, Cow::Borrowed(_)),
                *borrowed,
                "{input:?} borrowed"
            );
        }
    }

    #[test]
    fn canonical_forms() {
        assert!(matches!(canonical_host("a.b"), Cow::Borrowed("a.b")));
        assert_eq!(canonical_host("A.B."), "a.b");
        let v4: IpNet = "10.0.0.0/8".parse().expect("net");
        assert_eq!(
            canonical_net("::ffff:10.0.0.0/104".parse().expect("net")),
            v4
        );
        let v6: IpNet = "fd00::/8".parse().expect("net");
        assert_eq!(canonical_net(v6), v6);
        assert!(!fold_eq("Straße", "STRASSE") && fold_eq("ÄB", "äb"));
    }
}
