//! `/etc/halos/hostnames.conf`: the device's host names, HaLOS format.
//!
//! Mirrors HaLOS's `lib-hostnames.sh` (`halos_load_hostnames`), so cookie domains and
//! `${HALOS_DOMAIN}` redirect URIs agree with the TLS certificate and the rest of the stack:
//! - one entry per line, surrounding whitespace trimmed; blank lines and lines starting with
//!   `#` are ignored;
//! - tokens `${fqdn}`, `${domain}` and `${hostname}` (short name) are expanded, in that
//!   order, once; a line using `${domain}` when no domain is known, or `${fqdn}` when the
//!   FQDN has no domain part, is dropped, as is a domain-dependent line whose expansion
//!   is not a valid name;
//! - an entry is an IPv4 address (canonical dotted quad), an IPv6 address, or a DNS name
//!   (RFC 1123 labels, single-label names allowed);
//! - at most [`MAX_ENTRIES`] entries (counted before dropping); more entries, or any other
//!   invalid entry (bad characters, an unknown `${token}`, an invalid name), make the whole
//!   file fall back to `<short hostname>.local`, like HaLOS — fail closed, never half a list;
//! - no DNS entry left → the same fallback;
//! - duplicates are removed (DNS names case-insensitively, IPs by address), order kept;
//! - the first DNS entry is canonical.
//!
//! A missing file behaves as HaLOS's shipped default ([`DEFAULT_CONTENT`]).

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::config::CookieDomainConfig;

pub const DEFAULT_HOSTNAMES_PATH: &str = "/etc/halos/hostnames.conf";
/// Written by HaLOS's `halos-resolve-domain.service`: `HALOS_DOMAIN=<canonical>`.
pub const DOMAIN_ENV_PATH: &str = "/run/halos/domain.env";
/// HaLOS's last-known-good DNS domain (`lib-hostnames.sh` sticky resolution).
pub const PERSISTED_DOMAIN_PATH: &str = "/var/lib/halos/resolved-domain";
/// HaLOS's cap on entries.
pub const MAX_ENTRIES: usize = 16;
/// The content HaLOS ships in `/etc/halos/hostnames.conf`.
pub const DEFAULT_CONTENT: &str = "${hostname}.local\n${fqdn}\n";

const MAX_FILE_BYTES: u64 = 64 * 1024;
const HALOS_DOMAIN_TOKEN: &str = "${HALOS_DOMAIN}";

/// The system's names, used to expand the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemNames {
    /// Short host name (`hostname -s`).
    pub hostname: String,
    /// DNS domain (`hostname -d`, else the resolver's search domain, else HaLOS's persisted
    /// last-known-good domain), if any.
    pub domain: Option<String>,
    /// `<hostname>.<domain>`, or the short name when there is no domain.
    pub fqdn: String,
}

impl SystemNames {
    /// From a host name (shortened at the first dot) and an optional domain (trimmed, one
    /// trailing dot removed; ignored unless it is made of letters, digits, `-` and `.`).
    pub fn new(hostname: &str, domain: Option<&str>) -> SystemNames {
        let hostname = short_name(hostname).to_string();
        let domain = domain.and_then(clean_domain);
        let fqdn = match &domain {
            Some(d) => format!("{hostname}.{d}"),
            None => hostname.clone(),
        };
        SystemNames {
            hostname,
            domain,
            fqdn,
        }
    }

    /// Reads the running system's names without spawning processes:
    /// host name from `/proc/sys/kernel/hostname` (what `gethostname(2)` returns), else
    /// `/etc/hostname`, else `localhost`; domain as [`SystemNames::from_sources`] describes
    /// from `/etc/hosts`, `/etc/resolv.conf` and [`PERSISTED_DOMAIN_PATH`].
    pub fn from_system() -> SystemNames {
        let read = |p: &str| read_capped(Path::new(p)).ok();
        SystemNames::from_sources(
            read("/proc/sys/kernel/hostname").as_deref(),
            read("/etc/hostname").as_deref(),
            read("/etc/hosts").as_deref(),
            read("/etc/resolv.conf").as_deref(),
            read(PERSISTED_DOMAIN_PATH).as_deref(),
        )
    }

    /// The names from the text of the usual sources (each optional):
    /// 1. host name: the kernel's, else the first line of `/etc/hostname`, else `localhost`
    ///    (a value that is not a DNS name, such as the kernel's `(none)`, is skipped);
    /// 2. domain, first found: the part after the first dot of that host name; the part
    ///    after the first dot of the canonical name (first name) of the first `/etc/hosts`
    ///    line listing the host name (what `hostname -d` reports through glibc's files
    ///    backend); the `domain`, else the first `search` entry of the last such line in
    ///    `resolv.conf` (where NetworkManager and systemd-resolved put the DHCP domain
    ///    HaLOS reads through `nmcli`); HaLOS's persisted last-known-good domain.
    pub fn from_sources(
        kernel_hostname: Option<&str>,
        etc_hostname: Option<&str>,
        etc_hosts: Option<&str>,
        resolv_conf: Option<&str>,
        persisted_domain: Option<&str>,
    ) -> SystemNames {
        let first_line = |t: &str| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
        };
        let full = [kernel_hostname, etc_hostname]
            .into_iter()
            .flatten()
            .filter_map(first_line)
            .find(|h| is_dns_name(h))
            .unwrap_or_else(|| "localhost".to_string());
        let domain = full
            .split_once('.')
            .and_then(|(_, d)| clean_domain(d))
            .or_else(|| etc_hosts.and_then(|t| domain_from_hosts(t, &full)))
            .or_else(|| resolv_conf.and_then(domain_from_resolv_conf))
            .or_else(|| persisted_domain.and_then(clean_domain));
        SystemNames::new(&full, domain.as_deref())
    }
}

/// The parsed host-name list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostnames {
    /// DNS names (as written) and IP addresses, in file order, deduplicated.
    pub entries: Vec<String>,
    short_hostname: String,
    notice: Option<String>,
}

impl Hostnames {
    /// Parses the file's text (see the module docs).
    pub fn parse(text: &str, names: &SystemNames) -> Hostnames {
        let short = short_name(&names.hostname).to_string();
        let fallback = |reason: String| Hostnames {
            entries: vec![format!("{short}.local")],
            short_hostname: short.clone(),
            notice: Some(format!("{reason}; falling back to {short}.local")),
        };
        let domain = names.domain.as_deref().and_then(clean_domain);
        let fqdn = Some(names.fqdn.trim()).filter(|f| f.contains('.') && !f.ends_with('.'));
        let mut entries: Vec<String> = Vec::new();
        let mut count = 0;
        for raw in text.lines() {
            let line = raw.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c'));
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            count += 1;
            if count > MAX_ENTRIES {
                return fallback(format!("more than {MAX_ENTRIES} entries"));
            }
            let uses_domain = line.contains("${fqdn}") || line.contains("${domain}");
            let expanded = match (
                line.contains("${fqdn}"),
                fqdn,
                line.contains("${domain}"),
                &domain,
            ) {
                (true, None, _, _) | (_, _, true, None) => continue,
                _ => line
                    .replace("${fqdn}", fqdn.unwrap_or_default())
                    .replace("${domain}", domain.as_deref().unwrap_or_default())
                    .replace("${hostname}", &short),
            };
            if expanded.is_empty() {
                if uses_domain {
                    continue;
                }
                return fallback(format!("entry {line:?} is empty after expansion"));
            }
            if has_dangerous_chars(&expanded) {
                return fallback(format!(
                    "entry {line:?} has forbidden characters (or an unknown token)"
                ));
            }
            if is_ipv4_shape(&expanded) {
                if parse_ipv4_strict(&expanded).is_none() {
                    return fallback(format!("invalid IPv4 entry {expanded:?}"));
                }
            } else if parse_ipv6(&expanded).is_none() && !is_dns_name(&expanded) {
                if uses_domain {
                    continue;
                }
                return fallback(format!("invalid hostname entry {expanded:?}"));
            }
            let duplicate = entries.iter().any(|e| same_entry(e, &expanded));
            if !duplicate {
                entries.push(expanded);
            }
        }
        if !entries.iter().any(|e| !is_ip(e)) {
            return fallback("no valid DNS entries".into());
        }
        Hostnames {
            entries,
            short_hostname: short,
            notice: None,
        }
    }

    /// HaLOS's shipped default content, expanded.
    pub fn default_for(names: &SystemNames) -> Hostnames {
        Hostnames::parse(DEFAULT_CONTENT, names)
    }

    /// Reads and parses `path`. Never fails: a missing file gives [`DEFAULT_CONTENT`]; an
    /// unreadable, oversized or non-UTF-8 one gives the `<short>.local` fallback. Either
    /// case sets [`Hostnames::notice`] for the log.
    pub fn load(path: &Path, names: &SystemNames) -> Hostnames {
        match read_capped(path) {
            Ok(text) => Hostnames::parse(&text, names),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut h = Hostnames::default_for(names);
                let note = format!(
                    "{} not found; using the HaLOS default (${{hostname}}.local, ${{fqdn}})",
                    path.display()
                );
                h.notice = Some(match h.notice {
                    Some(n) => format!("{note}; {n}"),
                    None => note,
                });
                h
            }
            Err(e) => {
                let short = short_name(&names.hostname).to_string();
                Hostnames {
                    entries: vec![format!("{short}.local")],
                    notice: Some(format!(
                        "{}: {e}; falling back to {short}.local",
                        path.display()
                    )),
                    short_hostname: short,
                }
            }
        }
    }

    /// Why the list is not simply the file's content (missing file, fallback), if it isn't.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The short host name the list was expanded with.
    pub fn short_hostname(&self) -> &str {
        &self.short_hostname
    }

    /// The first DNS entry (the issuer host, `HALOS_DOMAIN`).
    pub fn canonical(&self) -> String {
        self.dns_names()
            .first()
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("{}.local", self.short_hostname))
    }

    /// Every DNS entry (single-label names included), in order.
    pub fn dns_names(&self) -> Vec<&str> {
        self.entries
            .iter()
            .map(String::as_str)
            .filter(|e| !is_ip(e))
            .collect()
    }

    /// Every IP entry, in order.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.entries.iter().filter_map(|e| parse_ip(e)).collect()
    }

    /// Cookie domains: every multi-label DNS entry, lower-cased, deduplicated (single-label
    /// names and IPs cannot carry cookies); `<short>.local` when none is left.
    pub fn cookie_domains(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in self.dns_names() {
            let d = d.to_ascii_lowercase();
            if d.contains('.') && !out.contains(&d) {
                out.push(d);
            }
        }
        if out.is_empty() {
            out.push(format!(
                "{}.local",
                self.short_hostname.to_ascii_lowercase()
            ));
        }
        out
    }

    /// `session.cookies` derived from the list, as HaLOS renders them: per cookie domain,
    /// portal `https://<domain><path_prefix>` and default redirection `https://<domain>/`.
    pub fn cookie_configs(&self, path_prefix: &str) -> Vec<CookieDomainConfig> {
        self.cookie_domains()
            .into_iter()
            .filter_map(|domain| {
                let authelia_url =
                    url::Url::parse(&format!("https://{domain}{path_prefix}")).ok()?;
                let default_redirection_url = url::Url::parse(&format!("https://{domain}/")).ok();
                Some(CookieDomainConfig {
                    domain,
                    authelia_url,
                    default_redirection_url,
                    name: None,
                })
            })
            .collect()
    }

    /// `HALOS_DOMAIN`: the environment value, else the `HALOS_DOMAIN=` line of
    /// `/run/halos/domain.env` (quotes removed; the last assignment wins), else the
    /// canonical entry. Values that are not a host name are ignored.
    pub fn halos_domain(
        &self,
        env_value: Option<&str>,
        domain_env_file_text: Option<&str>,
    ) -> Option<String> {
        env_value
            .map(str::trim)
            .filter(|v| is_host_value(v))
            .map(str::to_string)
            .or_else(|| domain_env_file_text.and_then(parse_domain_env))
            .or_else(|| Some(self.canonical()))
    }

    /// [`Hostnames::halos_domain`] with the process environment and [`DOMAIN_ENV_PATH`].
    pub fn resolve_halos_domain(&self) -> String {
        let env = std::env::var("HALOS_DOMAIN").ok();
        let file = read_capped(Path::new(DOMAIN_ENV_PATH)).ok();
        self.halos_domain(env.as_deref(), file.as_deref())
            .unwrap_or_else(|| self.canonical())
    }
}

/// A redirect URI containing the literal `${HALOS_DOMAIN}` becomes one URI per DNS entry
/// (IPs excluded, single-label names included), as HaLOS's merger does; any other URI is
/// returned unchanged. No other variable is expanded.
pub fn expand_redirect_uri(uri: &str, hostnames: &Hostnames) -> Vec<String> {
    if !uri.contains(HALOS_DOMAIN_TOKEN) {
        return vec![uri.to_string()];
    }
    hostnames
        .dns_names()
        .into_iter()
        .map(|h| uri.replace(HALOS_DOMAIN_TOKEN, h))
        .collect()
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    let mut buf = Vec::new();
    fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    String::from_utf8(buf)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn short_name(hostname: &str) -> &str {
    let h = hostname.trim();
    h.split('.').next().unwrap_or(h)
}

/// A domain value: trimmed, one trailing dot removed, letters/digits/`-`/`.` only, no
/// empty label.
fn clean_domain(d: &str) -> Option<String> {
    let d = d.trim();
    let d = d.strip_suffix('.').unwrap_or(d);
    let ok = !d.is_empty()
        && d.split('.').all(|l| !l.is_empty())
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| d.to_string())
}

fn domain_from_hosts(hosts: &str, hostname: &str) -> Option<String> {
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(_addr) = fields.next() else {
            continue;
        };
        let names: Vec<&str> = fields.collect();
        if names.iter().any(|n| n.eq_ignore_ascii_case(hostname)) {
            // glibc stops at the first matching line; its first name is canonical.
            return names[0].split_once('.').and_then(|(_, d)| clean_domain(d));
        }
    }
    None
}

fn domain_from_resolv_conf(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("domain") | Some("search") => found = fields.next(),
            _ => {}
        }
    }
    found.and_then(clean_domain)
}

fn parse_domain_env(text: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "HALOS_DOMAIN" {
            continue;
        }
        let value = value.trim();
        let value = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value)
            .trim();
        if is_host_value(value) {
            found = Some(value.to_string());
        }
    }
    found
}

fn is_host_value(v: &str) -> bool {
    is_dns_name(v) || parse_ip(v).is_some()
}

/// HaLOS's `_halos_has_dangerous_chars`: whitespace, quotes, `$`, backtick, backslash,
/// control characters.
fn has_dangerous_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "`$\\\"'".contains(c))
}

/// RFC 1123 names: labels of 1–63 letters/digits/hyphens, not starting or ending with a
/// hyphen; single-label names allowed.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `^([0-9]{1,3}\.){3}[0-9]{1,3}$`.
fn is_ipv4_shape(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A dotted quad with octets 0–255 and no leading zeros.
fn parse_ipv4_strict(s: &str) -> Option<Ipv4Addr> {
    if !is_ipv4_shape(s) || s.split('.').any(|p| p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

/// Hex digits and colons only (no embedded IPv4), and a valid address.
fn parse_ipv6(s: &str) -> Option<Ipv6Addr> {
    if !s.contains(':') || !s.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
        return None;
    }
    s.parse().ok()
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    parse_ipv4_strict(s)
        .map(IpAddr::V4)
        .or_else(|| parse_ipv6(s).map(IpAddr::V6))
}

fn is_ip(s: &str) -> bool {
    parse_ip(s).is_some()
}

fn same_entry(a: &str, b: &str) -> bool {
    match (parse_ip(a), parse_ip(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_domain() -> SystemNames {
        SystemNames::new("halos", Some("example.com"))
    }
    fn no_domain() -> SystemNames {
        SystemNames::new("halos", None)
    }

    #[test]
    fn parse_table() {
        let seventeen: String = (1..=17).map(|i| format!("h{i}.lan\n")).collect();
        let sixteen: String = (1..=16)
            .map(|i| format!("h{i}.lan\n# comment {i}\n"))
            .collect();
        let sixteen_names: Vec<String> = (1..=16).map(|i| format!("h{i}.lan")).collect();
        let odd_domain = SystemNames {
            hostname: "halos".into(),
            domain: Some("bad_domain".into()),
            fqdn: "halos.bad_domain".into(),
        };
        let local_domain = SystemNames::new("halos", Some("local"));
        let (with_domain, no_domain) = (with_domain(), no_domain());
        // (name, text, names, entries, fell back / has a notice)
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, &SystemNames, Vec<&str>, bool)> = vec![
            ("default content, domain known", DEFAULT_CONTENT, &with_domain, vec!["halos.local", "halos.example.com"], false),
            ("default content, no domain: ${fqdn} dropped", DEFAULT_CONTENT, &no_domain, vec!["halos.local"], false),
            ("comments, blanks, surrounding whitespace", "# top\n\n   halos.local  \n\t# indented comment\nboat.lan\n", &no_domain, vec!["halos.local", "boat.lan"], false),
            ("CRLF line endings", "halos.local\r\nboat.lan\r\n", &no_domain, vec!["halos.local", "boat.lan"], false),
            ("no final newline", "halos.local\nboat.lan", &no_domain, vec!["halos.local", "boat.lan"], false),
            ("${hostname} token", "${hostname}.lan\n", &no_domain, vec!["halos.lan"], false),
            ("${hostname} alone: single label", "${hostname}\n", &no_domain, vec!["halos"], false),
            ("${domain} token", "web.${domain}\n", &with_domain, vec!["web.example.com"], false),
            ("${fqdn} token", "${fqdn}\n", &with_domain, vec!["halos.example.com"], false),
            ("${domain} without domain: dropped", "web.${domain}\nboat.lan\n", &no_domain, vec!["boat.lan"], false),
            ("${fqdn} without domain: dropped", "${fqdn}\nboat.lan\n", &no_domain, vec!["boat.lan"], false),
            ("invalid domain value: dependent line dropped", "web.${domain}\nhalos.local\n", &odd_domain, vec!["halos.local"], false),
            ("only dropped lines: fallback", "${fqdn}\n", &no_domain, vec!["halos.local"], true),
            ("IPv4 line", "halos.local\n192.168.1.10\n", &no_domain, vec!["halos.local", "192.168.1.10"], false),
            ("IPv6 line", "halos.local\nfd00::1\n", &no_domain, vec!["halos.local", "fd00::1"], false),
            ("IP first, canonical is the first DNS name", "10.0.0.5\nboat.lan\n", &no_domain, vec!["10.0.0.5", "boat.lan"], false),
            ("only IPs: fallback", "192.168.1.10\nfd00::1\n", &no_domain, vec!["halos.local"], true),
            ("empty file: fallback", "", &no_domain, vec!["halos.local"], true),
            ("only comments: fallback", "# nothing\n\n", &no_domain, vec!["halos.local"], true),
            ("invalid IPv4 octet: fallback", "halos.local\n192.168.1.300\n", &no_domain, vec!["halos.local"], true),
            ("IPv4 leading zero: fallback", "halos.local\n010.0.0.1\n", &no_domain, vec!["halos.local"], true),
            ("IPv6 with embedded IPv4: fallback", "halos.local\n::ffff:1.2.3.4\n", &no_domain, vec!["halos.local"], true),
            ("unknown token: fallback", "boat.lan\n${foo}.local\n", &no_domain, vec!["halos.local"], true),
            ("inner whitespace: fallback", "boat.lan\nhalos local\n", &no_domain, vec!["halos.local"], true),
            ("quote: fallback", "boat.lan\n'x.lan'\n", &no_domain, vec!["halos.local"], true),
            ("label starting with hyphen: fallback", "boat.lan\n-bad.lan\n", &no_domain, vec!["halos.local"], true),
            ("underscore: fallback", "boat.lan\nbad_name.lan\n", &no_domain, vec!["halos.local"], true),
            ("trailing dot: fallback", "boat.lan.\n", &no_domain, vec!["halos.local"], true),
            ("dedupe case-insensitively, first kept", "Halos.Local\nboat.lan\nhalos.local\nHALOS.LOCAL\n", &no_domain, vec!["Halos.Local", "boat.lan"], false),
            ("dedupe token collision (domain local)", DEFAULT_CONTENT, &local_domain, vec!["halos.local"], false),
            ("dedupe IPs by address", "h.lan\nfd00::1\nfd00:0::1\n10.0.0.1\n10.0.0.1\n", &no_domain, vec!["h.lan", "fd00::1", "10.0.0.1"], false),
            ("single-label names kept", "halosdev\nhalos.local\n", &no_domain, vec!["halosdev", "halos.local"], false),
            ("16 entries, comments not counted", &sixteen, &no_domain, sixteen_names.iter().map(String::as_str).collect(), false),
            ("17 entries: fallback", &seventeen, &no_domain, vec!["halos.local"], true),
        ];
        for (name, text, names, want, fell_back) in cases {
            let h = Hostnames::parse(text, names);
            assert_eq!(h.entries, want, "{name}");
            assert_eq!(h.notice().is_some(), fell_back, "{name}: {:?}", h.notice());
        }
    }

    #[test]
    fn accessors() {
        let h = Hostnames::parse(
            "halosdev\nHalos.Local\n10.0.0.5\nboat.example.com\nfd00::1\nhalos.local\n",
            &SystemNames::new("pi", None),
        );
        assert_eq!(h.canonical(), "halosdev");
        assert_eq!(
            h.dns_names(),
            ["halosdev", "Halos.Local", "boat.example.com"]
        );
        assert_eq!(
            h.ips(),
            [
                "10.0.0.5".parse::<IpAddr>().expect("ip"),
                "fd00::1".parse().expect("ip")
            ]
        );
        assert_eq!(h.cookie_domains(), ["halos.local", "boat.example.com"]);
        assert_eq!(h.short_hostname(), "pi");

        // Single-label names only: cookies fall back to <short>.local.
        let single = Hostnames::parse("halosdev\n10.0.0.5\n", &SystemNames::new("Pi", None));
        assert_eq!(single.canonical(), "halosdev");
        assert_eq!(single.cookie_domains(), ["pi.local"]);

        let configs = h.cookie_configs("/sso");
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[1].domain, "boat.example.com");
        assert_eq!(
            configs[1].authelia_url.as_str(),
            "https://boat.example.com/sso"
        );
        assert_eq!(
            configs[1]
                .default_redirection_url
                .as_ref()
                .map(url::Url::as_str),
            Some("https://boat.example.com/")
        );
    }

    #[test]
    fn halos_domain_table() {
        let h = Hostnames::parse("halos.local\nboat.lan\n", &no_domain());
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
            ("env wins", Some("boat.example.com"), Some("HALOS_DOMAIN=halos.local\n"), "boat.example.com"),
            ("env trimmed", Some(" boat.lan\n"), None, "boat.lan"),
            ("blank env: file", Some("  "), Some("HALOS_DOMAIN=x.lan\n"), "x.lan"),
            ("invalid env: file", Some("bad value"), Some("HALOS_DOMAIN=x.lan\n"), "x.lan"),
            ("file plain", None, Some("HALOS_DOMAIN=x.lan\n"), "x.lan"),
            ("file double quotes", None, Some("HALOS_DOMAIN=\"x.lan\"\n"), "x.lan"),
            ("file single quotes", None, Some("HALOS_DOMAIN='x.lan'\n"), "x.lan"),
            ("file comments, other keys, export", None, Some("# c\nOTHER=y.lan\nexport HALOS_DOMAIN=x.lan\n"), "x.lan"),
            ("file last assignment wins", None, Some("HALOS_DOMAIN=a.lan\nHALOS_DOMAIN=b.lan\n"), "b.lan"),
            ("file similar key ignored", None, Some("HALOS_DOMAIN_X=a.lan\nXHALOS_DOMAIN=b.lan\n"), "halos.local"),
            ("file empty value: canonical", None, Some("HALOS_DOMAIN=\n"), "halos.local"),
            ("file hostile value: canonical", None, Some("HALOS_DOMAIN=$(reboot)\n"), "halos.local"),
            ("file unbalanced quote: canonical", None, Some("HALOS_DOMAIN=\"x.lan\n"), "halos.local"),
            ("nothing: canonical", None, None, "halos.local"),
        ];
        for (name, env, file, want) in cases {
            assert_eq!(
                h.halos_domain(*env, *file).as_deref(),
                Some(*want),
                "{name}"
            );
        }
    }

    #[test]
    fn expand_redirect_uri_table() {
        let h = Hostnames::parse(
            "halos.local\nhalosdev\n10.0.0.5\nboat.example.com\nfd00::1\n",
            &no_domain(),
        );
        #[rustfmt::skip]
        let cases: &[(&str, &[&str])] = &[
            ("https://${HALOS_DOMAIN}/cb", &["https://halos.local/cb", "https://halosdev/cb", "https://boat.example.com/cb"]),
            ("https://${HALOS_DOMAIN}/a?h=${HALOS_DOMAIN}", &["https://halos.local/a?h=halos.local", "https://halosdev/a?h=halosdev", "https://boat.example.com/a?h=boat.example.com"]),
            ("https://fixed.example/cb", &["https://fixed.example/cb"]),
            ("https://${HOSTNAME}/cb", &["https://${HOSTNAME}/cb"]),
            ("https://$HALOS_DOMAIN/cb", &["https://$HALOS_DOMAIN/cb"]),
            ("https://${halos_domain}/cb", &["https://${halos_domain}/cb"]),
        ];
        for (uri, want) in cases {
            assert_eq!(expand_redirect_uri(uri, &h), *want, "{uri}");
        }
    }

    #[test]
    fn system_names_table() {
        type Sources = [Option<&'static str>; 5];
        #[rustfmt::skip]
        let cases: &[(&str, Sources, &str, Option<&str>)] = &[
            // (name, [kernel, /etc/hostname, /etc/hosts, resolv.conf, persisted], short, domain)
            ("kernel name, hosts canonical", [Some("halos\n"), None, Some("127.0.0.1 localhost\n127.0.1.1\thalos.example.com halos\n"), None, None], "halos", Some("example.com")),
            ("first matching hosts line wins", [Some("halos"), None, Some("127.0.1.1 halos.a.lan halos\n10.0.0.1 halos.b.lan halos\n"), None, None], "halos", Some("a.lan")),
            ("hosts comments ignored", [Some("halos"), None, Some("#127.0.1.1 halos.x.lan halos\n127.0.1.1 halos # halos.y.lan\n"), Some("search z.lan\n"), None], "halos", Some("z.lan")),
            ("kernel FQDN", [Some("halos.boat.lan\n"), None, None, None, None], "halos", Some("boat.lan")),
            ("/etc/hostname when kernel unset", [Some("(none)\n"), Some("# c\nmybox\n"), None, None, None], "mybox", None),
            ("nothing: localhost", [None, None, None, None, None], "localhost", None),
            ("resolv.conf search", [Some("halos"), None, Some("127.0.1.1 halos\n"), Some("nameserver 10.0.0.1\nsearch lan home\n"), None], "halos", Some("lan")),
            ("resolv.conf last of domain/search", [Some("halos"), None, None, Some("search a.lan\ndomain corp.example\n"), None], "halos", Some("corp.example")),
            ("resolv.conf root search ignored", [Some("halos"), None, None, Some("search .\n"), Some("boat.example\n")], "halos", Some("boat.example")),
            ("persisted domain", [Some("halos"), None, None, None, Some("boat.example\n")], "halos", Some("boat.example")),
            ("unsafe persisted domain ignored", [Some("halos"), None, None, None, Some("$(x)\n")], "halos", None),
        ];
        for (name, [k, eh, hosts, resolv, persisted], short, domain) in cases {
            let n = SystemNames::from_sources(*k, *eh, *hosts, *resolv, *persisted);
            assert_eq!(n.hostname, *short, "{name}");
            assert_eq!(n.domain.as_deref(), *domain, "{name}");
            let fqdn = domain.map_or(short.to_string(), |d| format!("{short}.{d}"));
            assert_eq!(n.fqdn, fqdn, "{name}");
        }
        let n = SystemNames::new("Pi.Example.com", Some(" lan. "));
        assert_eq!(
            (n.hostname.as_str(), n.domain.as_deref(), n.fqdn.as_str()),
            ("Pi", Some("lan"), "Pi.lan")
        );
        let live = SystemNames::from_system();
        assert!(!live.hostname.is_empty() && !live.hostname.contains('.'));
    }

    #[test]
    fn load_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = with_domain();

        let missing = Hostnames::load(&dir.path().join("absent.conf"), &names);
        assert_eq!(missing.entries, ["halos.local", "halos.example.com"]);
        assert!(missing.notice().is_some_and(|n| n.contains("not found")));

        let path = dir.path().join("hostnames.conf");
        fs::write(&path, "# mine\nboat.lan\n${fqdn}\n").expect("write");
        let loaded = Hostnames::load(&path, &names);
        assert_eq!(loaded.entries, ["boat.lan", "halos.example.com"]);
        assert_eq!(loaded.notice(), None);

        fs::write(&path, b"boat.lan\n\xff\n").expect("write");
        let binary = Hostnames::load(&path, &names);
        assert_eq!(binary.entries, ["halos.local"]);
        assert!(binary.notice().is_some());

        fs::write(&path, "a.lan\n".repeat(20_000)).expect("write");
        let huge = Hostnames::load(&path, &names);
        assert_eq!(huge.entries, ["halos.local"]);
        assert!(huge.notice().is_some());

        let is_dir = Hostnames::load(dir.path(), &names);
        assert_eq!(is_dir.entries, ["halos.local"]);
        assert!(is_dir.notice().is_some());
    }
}
