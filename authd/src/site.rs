//! The site as the daemon serves it: cookie domains, portal URLs, redirect and access
//! rules — derived once from the configuration and hostnames.conf, swapped on reload.

use url::Url;

use crate::authz::access::AccessControl;
use crate::authz::redirect::{RedirectDomain, SafeRedirect};
use crate::config::Config;
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
        Ok(Site {
            cookie_domains,
            redirects,
            access,
        })
    }

    /// The first configured cookie domain that `host` is equal to or under.
    pub fn cookie_domain_for(&self, host: &str) -> Option<&CookieDomain> {
        let d = self.redirects.cookie_domain_for(host)?;
        self.cookie_domains.iter().find(|c| c.domain == d.domain)
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
