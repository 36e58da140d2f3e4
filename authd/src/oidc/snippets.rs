//! OIDC client snippets: `/etc/halos/oidc-clients.d/*.yml`, one client per file, as HaLOS
//! app packages write them (DESIGN §8).
//!
//! Each file stands alone: a broken, oversized, alias-bombed or duplicate file is
//! reported with file, line and reason and skipped, and every other client keeps
//! working. When a file that loaded before becomes broken, its **previous good version
//! stays in force** (and the problem is reported) until it is fixed or deleted: an app
//! being upgraded must not lose its login because of a half-written snippet.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{OidcClientConfig, OneOrMany};
use crate::hostnames::{Hostnames, expand_redirect_uri};
use crate::secret::Secret;
use crate::yaml::parse_yaml;

/// Snippets larger than this are refused (a real one is a few hundred bytes).
pub const MAX_SNIPPET_BYTES: usize = 64 * 1024;

/// A problem with one snippet file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnippetProblem {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for SnippetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The result of reading the snippet directory.
#[derive(Debug, Clone, Default)]
pub struct Snippets {
    /// `(source file, config)` in file-name order, `${HALOS_DOMAIN}` expanded.
    pub clients: Vec<(String, OidcClientConfig)>,
    pub problems: Vec<SnippetProblem>,
    /// The last good version of every file (as read, before expansion): kept in force
    /// when a file turns broken.
    pub last_good: BTreeMap<PathBuf, OidcClientConfig>,
}

/// Only `*.yml` counts; editor leftovers and hidden files never do.
pub fn is_snippet(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".yml")
}

/// Parses one snippet's text.
pub fn parse_snippet(text: &str, file: &Path) -> Result<OidcClientConfig, SnippetProblem> {
    parse_yaml::<OidcClientConfig>(text, &file.display().to_string(), MAX_SNIPPET_BYTES).map_err(
        |e| SnippetProblem {
            file: file.to_path_buf(),
            line: e.line,
            reason: if e.key_path.is_empty() {
                e.reason
            } else {
                format!("{}: {}", e.key_path, e.reason)
            },
        },
    )
}

fn read_snippet(path: &Path) -> Result<OidcClientConfig, SnippetProblem> {
    let problem = |reason: String| SnippetProblem {
        file: path.to_path_buf(),
        line: None,
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| problem(format!("cannot read: {e}")))?;
    // Anybody able to write it could register a client with their own redirect URI.
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o002 != 0 {
        return Err(problem(format!(
            "writable by everyone (mode {mode:o}); chmod o-w it"
        )));
    }
    if meta.len() > MAX_SNIPPET_BYTES as u64 {
        return Err(problem(format!(
            "{} bytes, larger than the {MAX_SNIPPET_BYTES}-byte limit",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
    parse_snippet(&text, path)
}

/// `${HALOS_DOMAIN}` in redirect URIs becomes one URI per DNS hostname.
pub fn expand(cfg: &OidcClientConfig, hostnames: &Hostnames) -> OidcClientConfig {
    let fan = |uris: &OneOrMany| {
        OneOrMany(
            uris.0
                .iter()
                .flat_map(|u| expand_redirect_uri(u, hostnames))
                .collect(),
        )
    };
    OidcClientConfig {
        redirect_uris: fan(&cfg.redirect_uris),
        post_logout_redirect_uris: fan(&cfg.post_logout_redirect_uris),
        ..cfg.clone()
    }
}

/// Reads every snippet in `dir`. `previous` is the last good version per file from the
/// previous load.
pub fn load_dir(
    dir: &Path,
    hostnames: &Hostnames,
    previous: &BTreeMap<PathBuf, OidcClientConfig>,
) -> Snippets {
    let mut out = Snippets::default();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_snippet(p) && p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            out.problems.push(SnippetProblem {
                file: dir.to_path_buf(),
                line: None,
                reason: format!("cannot list: {e}"),
            });
            return out;
        }
    };
    files.sort();
    for file in files {
        let cfg = match read_snippet(&file) {
            Ok(c) => c,
            Err(p) => {
                let kept = previous.get(&file).cloned();
                out.problems.push(SnippetProblem {
                    reason: if kept.is_some() {
                        format!("{}; keeping the previous version of this file", p.reason)
                    } else {
                        p.reason
                    },
                    ..p
                });
                match kept {
                    Some(c) => c,
                    None => continue,
                }
            }
        };
        out.last_good.insert(file.clone(), cfg.clone());
        out.clients
            .push((file.display().to_string(), expand(&cfg, hostnames)));
    }
    out
}

/// Reads a `client_secret_file`, warning when others than its owner can read it.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "client secret file is readable by others than its owner; chmod 600 it");
    }
    let secret = crate::oidc::clients::read_secret_file(path)?;
    if secret.expose().is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the secret file is empty",
        ));
    }
    Ok(secret)
}

/// The directories of the secret files the snippets name (watched for them to appear).
pub fn secret_dirs(clients: &[(String, OidcClientConfig)]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = clients
        .iter()
        .filter_map(|(_, c)| c.client_secret_file.as_ref())
        .map(|p| crate::watch::parent_dir(p))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnames::SystemNames;

    fn hostnames(text: &str) -> Hostnames {
        Hostnames::parse(text, &SystemNames::new("halos", Some("example.com")))
    }

    #[test]
    fn halos_snippet_shapes() {
        // Block list, quotes, comments (as HaLOS packages write them).
        let c = parse_snippet(
            "# Signal K\nclient_id: signalk\nclient_name: \"Signal K Server\"\nclient_secret_file: /x/oidc-secret\nredirect_uris:\n  - 'https://${HALOS_DOMAIN}/signalk-server/signalk/v1/auth/oidc/callback'\nscopes: [openid, profile, email, groups]\nconsent_mode: implicit\ntoken_endpoint_auth_method: client_secret_post\n",
            Path::new("signalk.yml"),
        )
        .unwrap();
        assert_eq!(c.client_id, "signalk");
        assert_eq!(c.client_name.as_deref(), Some("Signal K Server"));
        assert_eq!(
            c.scopes.unwrap().0,
            vec!["openid", "profile", "email", "groups"]
        );
        // Inline list of redirect URIs, block list of scopes, single-quoted id.
        let c = parse_snippet("client_id: 'grafana'\nredirect_uris: ['https://a/cb', \"https://b/cb\"]\nscopes:\n  - openid\n", Path::new("g.yml")).unwrap();
        assert_eq!(c.redirect_uris.0, vec!["https://a/cb", "https://b/cb"]);
        assert_eq!(c.scopes.unwrap().0, vec!["openid"]);
        // Defaults are the registry's job: absent scopes stay absent here.
        let c = parse_snippet(
            "client_id: x\nredirect_uris: ['https://a/cb']\n",
            Path::new("x.yml"),
        )
        .unwrap();
        assert!(c.scopes.is_none() && c.consent_mode.is_none());
    }

    #[test]
    fn fan_out_skips_ips_and_keeps_single_label_names() {
        let h = hostnames("halos.local\nhalos\n192.168.1.5\nboat.example.com\n");
        let c = parse_snippet("client_id: x\nredirect_uris:\n  - 'https://${HALOS_DOMAIN}/cb'\n  - 'https://fixed.example/cb'\n", Path::new("x.yml")).unwrap();
        let e = expand(&c, &h);
        assert_eq!(
            e.redirect_uris.0,
            vec![
                "https://halos.local/cb",
                "https://halos/cb",
                "https://boat.example.com/cb",
                "https://fixed.example/cb"
            ]
        );
        // No other variable is expanded.
        let c = parse_snippet(
            "client_id: x\nredirect_uris: ['https://${HOSTNAME}/cb']\n",
            Path::new("x.yml"),
        )
        .unwrap();
        assert_eq!(
            expand(&c, &h).redirect_uris.0,
            vec!["https://${HOSTNAME}/cb"]
        );
    }

    #[test]
    fn broken_files_are_isolated_and_the_previous_version_kept() {
        let dir = tempfile::tempdir().unwrap();
        let h = hostnames("halos.local\n");
        let good = "client_id: good\nredirect_uris: ['https://a/cb']\n";
        std::fs::write(dir.path().join("good.yml"), good).unwrap();
        std::fs::write(
            dir.path().join("app.yml"),
            "client_id: app\nredirect_uris: ['https://app/cb']\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ignored.yaml"), "client_id: nope\n").unwrap();
        std::fs::write(dir.path().join(".hidden.yml"), "client_id: nope\n").unwrap();
        std::fs::write(dir.path().join("notes.yml~"), "client_id: nope\n").unwrap();
        let first = load_dir(dir.path(), &h, &BTreeMap::new());
        assert_eq!(first.clients.len(), 2, "{:?}", first.problems);
        assert!(first.problems.is_empty());

        // app.yml turns broken: its previous version stays, the problem names file and line.
        std::fs::write(
            dir.path().join("app.yml"),
            "client_id: app\nredirect_uris: [\n",
        )
        .unwrap();
        // A new broken file, an oversized one and an alias bomb are skipped.
        std::fs::write(
            dir.path().join("new.yml"),
            "client_id: new\nunknown_key: 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("big.yml"),
            format!("client_id: big\n#{}\n", "x".repeat(MAX_SNIPPET_BYTES)),
        )
        .unwrap();
        let bomb = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\nclient_id: bomb\n";
        std::fs::write(dir.path().join("bomb.yml"), bomb).unwrap();
        let second = load_dir(dir.path(), &h, &first.last_good);
        let ids: Vec<_> = second
            .clients
            .iter()
            .map(|(_, c)| c.client_id.as_str())
            .collect();
        assert_eq!(ids, vec!["app", "good"]);
        let by_file = |name: &str| {
            second
                .problems
                .iter()
                .find(|p| p.file.ends_with(name))
                .unwrap_or_else(|| panic!("{name}: {:?}", second.problems))
        };
        assert!(
            by_file("app.yml")
                .reason
                .contains("keeping the previous version")
        );
        assert!(by_file("app.yml").line.is_some());
        assert!(
            by_file("new.yml").reason.contains("unknown_key"),
            "{}",
            by_file("new.yml")
        );
        assert!(by_file("big.yml").reason.contains("limit"));
        assert!(!by_file("bomb.yml").reason.is_empty());
        // Deleting the file removes the client.
        std::fs::remove_file(dir.path().join("app.yml")).unwrap();
        let third = load_dir(dir.path(), &h, &second.last_good);
        assert_eq!(
            third
                .clients
                .iter()
                .map(|(_, c)| c.client_id.as_str())
                .collect::<Vec<_>>(),
            vec!["good"]
        );
    }

    #[test]
    fn secret_files_trailing_newline_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "abc123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "abc123");
        std::fs::write(&p, "").unwrap();
        assert!(read_secret_file(&p).is_err());
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }
}
