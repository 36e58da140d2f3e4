"""The proxy recipes in the README's "Putting it behind a proxy" are valid for the real proxies, and
say what the tested configurations (harness.py) say."""
import re
import subprocess

from conftest import ROOT
from harness import Caddy, Nginx, Traefik, make_certs

SECTION = ROOT / "README.md"


def blocks(lang):
    text = SECTION.read_text().split("## Putting it behind a proxy", 1)[1]
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def normalise(text):
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


def test_caddy_recipe_is_accepted_by_caddy_and_matches_the_tested_one(tmp_path):
    (caddyfile,) = blocks("caddyfile")
    path = tmp_path / "Caddyfile"
    path.write_text(caddyfile)
    p = subprocess.run(["caddy", "adapt", "--config", str(path), "--adapter", "caddyfile"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    tested = Caddy(tmp_path / "c", "http", 443, 9091, 8080, None).config_text()
    snippet = tested[tested.index("(protected)"):tested.index("\n}\n", tested.index("(protected)"))]
    readme = caddyfile[caddyfile.index("(halos_authd)"):]
    for line in normalise(snippet)[1:]:
        assert line in normalise(readme), f"tested Caddy line missing from the README: {line}"


def test_nginx_recipe_is_accepted_by_nginx_and_matches_the_tested_one(tmp_path):
    upstream, location, authrequest, servers = blocks("nginx")[:4]
    certs = make_certs(tmp_path / "tls")
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    (snippets / "halos-authd-location.conf").write_text(location)
    (snippets / "halos-authd-authrequest.conf").write_text(authrequest)
    servers = (servers.replace("listen 443", "listen 127.0.0.1:1")
               .replace("/etc/ssl/certs/halos.local.crt", str(certs.cert))
               .replace("/etc/ssl/private/halos.local.key", str(certs.key))
               .replace("include snippets/", f"include {snippets}/"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n{upstream}\n{servers}\n}}\n")
    p = subprocess.run(["nginx", "-t", "-q", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    tested = Nginx(tmp_path / "n", "https", 443, 9091, 8080, None)
    assert normalise(upstream) == normalise(tested.upstream_conf())
    assert normalise(location) == normalise(tested.authz_snippet())
    assert normalise(authrequest) == normalise(tested.protect_snippet())


def test_traefik_middleware_is_halos_authelia_yml_shape(tmp_path):
    tested = Traefik(tmp_path, "https", 443, 9091, 8080, None)
    assert normalise(blocks("yaml")[1]) == normalise(tested.authelia_yml())
