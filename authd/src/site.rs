//! The site as the daemon serves it: cookie domains, portal URLs, redirect and access
//! rules — derived once from the configuration and hostnames.conf, swapped on reload.

use axum::http::HeaderName;
use url::Url;

use crate::authz::access::AccessControl;
use crate::authz::redirect::{RedirectDomain, SafeRedirect};
use crate::config::{Config, IdentityHeaders};
use crate::hostnames::Hostnames;

/// One cookie domain: sessions issued for it work on it and every subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieDomain {
    pub domain: String,
    /// Portal URL, always ending in `/` (e.g. `https://halos.local/sso/`).
    pub portal: Url,
    pub default_redirect: Option<Url>,
    pub cookie_name: String,
    /// `Secure` cookies unless the portal is explicitly `http://` (LAN opt-in).
    pub secure: bool,
}

#[derive(Debug)]
pub struct Site {
    pub cookie_domains: Vec<CookieDomain>,
    pub redirects: SafeRedirect,
    pub access: AccessControl,
    /// `access_control.identity_headers`, parsed once (forward auth sends them per request).
    identity_headers: IdentityHeaderNames,
    /// Each rule's own `identity_headers`, by rule index.
    rule_identity_headers: Vec<Option<IdentityHeaderNames>>,
}

/// The names of the four identity headers, ready to insert into a response.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    pub user: HeaderName,
    pub groups: HeaderName,
    pub name: HeaderName,
    pub email: HeaderName,
}

impl IdentityHeaderNames {
    fn parse(h: &IdentityHeaders) -> Result<IdentityHeaderNames, String> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("{n:?} is not a valid HTTP header name"))
        };
        Ok(IdentityHeaderNames {
            user: name(&h.user)?,
            groups: name(&h.groups)?,
            name: name(&h.name)?,
            email: name(&h.email)?,
        })
    }
}

fn with_slash(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

impl Site {
    pub fn build(config: &Config, hostnames: &Hostnames) -> Result<Site, String> {
        let prefix = config.path_prefix();
        let mut cookie_domains = Vec::new();
        if config.session.cookies.is_empty() {
            for d in hostnames.cookie_domains() {
                let portal = Url::parse(&format!("https://{d}{prefix}/"))
                    .map_err(|e| format!("{d}: {e}"))?;
                let default_redirect = Url::parse(&format!("https://{d}/")).ok();
                cookie_domains.push(CookieDomain {
                    domain: d.to_ascii_lowercase(),
                    portal,
                    default_redirect,
                    cookie_name: config.session.name.clone(),
                    secure: true,
                });
            }
        } else {
            for c in &config.session.cookies {
                cookie_domains.push(CookieDomain {
                    domain: c.domain.to_ascii_lowercase(),
                    portal: with_slash(c.authelia_url.clone()),
                    default_redirect: c.default_redirection_url.clone(),
                    cookie_name: c
                        .name
                        .clone()
                        .unwrap_or_else(|| config.session.name.clone()),
                    secure: c.authelia_url.scheme() == "https",
                });
            }
        }
        let redirects = SafeRedirect::new(
            cookie_domains
                .iter()
                .map(|c| RedirectDomain {
                    domain: c.domain.clone(),
                    allow_http: !c.secure,
                })
                .collect(),
        );
        let access = AccessControl::compile(&config.access_control, &config.definitions)?;
        let identity_headers = IdentityHeaderNames::parse(&config.access_control.identity_headers)?;
        let rule_identity_headers = config
            .access_control
            .rules
            .iter()
            .map(|r| {
                r.identity_headers
                    .as_ref()
                    .map(IdentityHeaderNames::parse)
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Site {
            cookie_domains,
            redirects,
            access,
            identity_headers,
            rule_identity_headers,
        })
    }

    /// The cookie domain at `index` (the positions [`SafeRedirect`] reports).
    pub fn cookie_domain_at(&self, index: usize) -> Option<&CookieDomain> {
        self.cookie_domains.get(index)
    }

    /// The identity header names for a decision of rule `rule` (`None`: the default policy).
    pub fn identity_headers(&self, rule: Option<usize>) -> &IdentityHeaderNames {
        rule.and_then(|i| self.rule_identity_headers.get(i)?.as_ref())
            .unwrap_or(&self.identity_headers)
    }

    /// The first configured cookie domain that `host` is equal to or under.
    pub fn cookie_domain_for(&self, host: &str) -> Option<&CookieDomain> {
        // `redirects` holds the cookie domains, normalised, in the same order.
        self.cookie_domains
            .get(self.redirects.domain_index_for(host)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostnames::SystemNames;

    #[test]
    fn cookie_domains_come_from_hostnames_when_not_configured() {
        let hostnames = Hostnames::parse(
            "halos.local\nhalos\n192.168.1.5\nboat.example.com\n",
            &SystemNames::new("halos", None),
        );
        let site = Site::build(&Config::default(), &hostnames).unwrap();
        let domains: Vec<_> = site
            .cookie_domains
            .iter()
            .map(|c| c.domain.as_str())
            .collect();
        assert_eq!(
            domains,
            vec!["halos.local", "boat.example.com"],
            "single-label names and IPs are not cookie domains"
        );
        assert_eq!(
            site.cookie_domains[0].portal.as_str(),
            "https://halos.local/sso/"
        );
        assert!(site.cookie_domains[0].secure);
        assert_eq!(
            site.cookie_domain_for("app.halos.local").unwrap().domain,
            "halos.local"
        );
        assert!(site.cookie_domain_for("halos").is_none());
        assert!(
            site.redirects
                .check("https://app.boat.example.com/x")
                .is_some()
        );
    }

    #[test]
    fn configured_cookies_win_and_http_portals_opt_into_http() {
        let mut config = Config::default();
        config.session.cookies = vec![crate::config::CookieDomainConfig {
            domain: "lan.test".into(),
            authelia_url: url::Url::parse("http://auth.lan.test/sso").unwrap(),
            default_redirection_url: None,
            name: Some("lan_session".into()),
        }];
        let hostnames = Hostnames::parse("halos.local\n", &SystemNames::new("halos", None));
        let site = Site::build(&config, &hostnames).unwrap();
        assert_eq!(site.cookie_domains.len(), 1);
        let cd = &site.cookie_domains[0];
        assert_eq!(
            (cd.cookie_name.as_str(), cd.secure, cd.portal.as_str()),
            ("lan_session", false, "http://auth.lan.test/sso/")
        );
        assert!(site.redirects.check("http://nas.lan.test/").is_some());
        assert!(site.redirects.check("https://halos.local/").is_none());
    }
}
