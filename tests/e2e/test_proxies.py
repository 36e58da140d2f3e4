"""halos-authd behind real Caddy, nginx and Traefik, over http and https, with a test upstream.

Every test starts its own stack (daemon in a temp dir on a free port, upstream, proxy); see harness.py.
"""
import json
import re
import urllib.parse

import pytest

from harness import (DOMAIN, IDENTITY_HEADERS, USERS, Client, Stack, header_values, make_certs,
                     reap_proxies, run_browser, upstream_headers)

PROXIES = ["caddy", "nginx", "traefik"]
SCHEMES = ["http", "https"]
COMBOS = [(p, s) for p in PROXIES for s in SCHEMES]
all_stacks = pytest.mark.parametrize("proxy,scheme", COMBOS, ids=[f"{p}-{s}" for p, s in COMBOS])

APP = "app.halos.test"
ADMIN = "admin.halos.test"
PUBLIC = "public.halos.test"
# A target with a query and a percent-encoded byte: `rd` must carry it unchanged.
TARGET_PATH = "/deck/log?day=2&note=caf%C3%A9"

SPOOF = {"Remote-User": "admin", "Remote-Groups": "admins", "Remote-Email": "admin@evil.test",
         "Remote-Name": "Mallory"}


@pytest.fixture(scope="module", autouse=True)
def _reap_proxies():
    yield
    reap_proxies()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def make_stack(tmp_path, certs):
    stacks = []

    def make(proxy, scheme, **kw):
        st = Stack(tmp_path / f"{proxy}-{scheme}", proxy, scheme,
                   certs if scheme == "https" else None, **kw)
        stacks.append(st)
        return st

    yield make
    for st in stacks:
        st.stop()


def portal_redirect(stack, location):
    """Splits a Location to the portal into (rd, rm); fails if it points anywhere else."""
    assert location, "no Location header"
    u = urllib.parse.urlsplit(location)
    assert f"{u.scheme}://{u.netloc}{u.path}" == stack.portal + "/", location
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    return q.get("rd", [None])[0], q.get("rm", [None])[0]


def identity(resp_body):
    h = upstream_headers(resp_body)
    return {name: header_values(h, name) for name in IDENTITY_HEADERS}


def expected_identity(user):
    display, email, groups, _ = USERS[user]
    return {"Remote-User": [user], "Remote-Groups": [",".join(groups)], "Remote-Email": [email],
            "Remote-Name": [display]}


# ----------------------------------------------------------------------------------------
# Anonymous requests are sent to the portal
# ----------------------------------------------------------------------------------------

@all_stacks
def test_anonymous_browser_request_is_sent_to_the_portal_with_rd(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)
    c = st.client()
    target = st.url(APP, TARGET_PATH)

    r = c.browser_get(target)
    assert r.status == 302, f"{r.status} {r.text}\n{st.logs()}"
    assert portal_redirect(st, r.header("Location")) == (target, "GET")

    # The root of the portal host is protected too (anything but /sso/*).
    root = st.url(DOMAIN, "/")
    r = c.browser_get(root)
    assert r.status == 302 and portal_redirect(st, r.header("Location")) == (root, "GET")

    # A browser form POST: 303 from forward auth; nginx's error_page turns every 401 into 302.
    r = c.request("POST", target, headers={"Accept": "text/html", "Content-Type":
                                            "application/x-www-form-urlencoded"}, body="a=1")
    assert r.status == (302 if proxy == "nginx" else 303), f"{r.status} {r.text}"
    assert portal_redirect(st, r.header("Location")) == (target, "POST")

    # XHR / API clients get 401 (+ Location) from forward auth; nginx redirects them too.
    r = c.get(target, headers={"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"})
    assert r.status == (302 if proxy == "nginx" else 401), f"{r.status} {r.text}"
    assert portal_redirect(st, r.header("Location")) == (target, "GET")

    assert st.upstream.requests == [], "an anonymous request reached the upstream"

    # A bypass rule lets anonymous requests through, with no identity.
    r = c.browser_get(st.url(PUBLIC, "/open"))
    assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
    assert all(v in ([], [""]) for v in identity(r.body).values()), r.text


# ----------------------------------------------------------------------------------------
# Login through the JSON API
# ----------------------------------------------------------------------------------------

@all_stacks
def test_json_login_returns_to_the_app_which_sees_the_identity(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)
    target = st.url(APP, TARGET_PATH)

    bad = st.client().post_json(st.url(DOMAIN, "/sso/api/firstfactor"),
                                {"username": "alice", "password": "wrong", "keepMeLoggedIn": False,
                                 "targetURL": target})
    assert bad.status == 401 and bad.json()["status"] == "KO", bad.text
    assert not any(sc.startswith("halos_session=") and not _deleting(sc) for sc in bad.all("Set-Cookie"))

    c, r = st.login("alice", target=target)
    body = r.json()
    assert body["status"] == "OK" and body["data"]["redirect"] == target, r.text

    # Session cookie: for the whole cookie domain, HttpOnly, Lax, Secure only over https.
    sc = [s for s in r.all("Set-Cookie") if s.startswith("halos_session=")]
    assert len(sc) == 1, r.all("Set-Cookie")
    attrs = {a.split("=", 1)[0].strip().lower(): (a.split("=", 1) + [""])[1].strip()
             for a in sc[0].split(";")[1:]}
    assert attrs.get("domain", "").lstrip(".") == DOMAIN, sc[0]
    assert "httponly" in attrs and attrs.get("samesite", "").lower() == "lax", sc[0]
    assert ("secure" in attrs) == (scheme == "https"), sc[0]

    r = c.browser_get(body["data"]["redirect"])
    assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
    seen = json.loads(r.body)
    assert seen["path"] == TARGET_PATH
    assert identity(r.body) == expected_identity("alice"), r.text

    # One login covers every host under the cookie domain.
    r = c.browser_get(st.url(DOMAIN, "/home"))
    assert r.status == 200 and identity(r.body) == expected_identity("alice"), r.text

    r = c.get(st.url(DOMAIN, "/sso/api/state"), headers={"Accept": "application/json"})
    assert r.status == 200, r.text
    assert r.json()["data"]["username"] == "alice"
    assert r.json()["data"]["authentication_level"] == 1


def _deleting(set_cookie):
    v = set_cookie.split(";", 1)[0].split("=", 1)[1]
    return v == "" or re.search(r"(?i)max-age=0\b", set_cookie) is not None


# ----------------------------------------------------------------------------------------
# Identity headers sent by the client never reach the upstream
# ----------------------------------------------------------------------------------------

def cgi_name(header):
    """The variable CGI, WSGI and PHP backends read a header as: Remote_User, Remote.User and
    Remote-User are all HTTP_REMOTE_USER to them."""
    return "HTTP_" + re.sub(r"[^A-Z0-9]", "_", header.upper())


IDENTITY_CGI = {cgi_name(h) for h in IDENTITY_HEADERS}

# The same identity, as a client could send it: plain, in other cases, and as names that alias
# Remote-User and friends for CGI-style backends.
SPOOF_VARIANTS = [
    list(SPOOF.items()),
    [(k.lower(), v) for k, v in SPOOF.items()],
    [(k.upper(), v) for k, v in SPOOF.items()],
    [(k.replace("-", "_"), v) for k, v in SPOOF.items()],
    [(k.replace("-", "."), v) for k, v in SPOOF.items()],
    [(k.lower().replace("-", "~"), v) for k, v in SPOOF.items()],
]


def spoofed_identity(upstream_body):
    """Identity headers (or aliases of them) the upstream got with a client-sent value."""
    return [(k, v) for k, v in upstream_headers(upstream_body)
            if cgi_name(k) in IDENTITY_CGI and v in SPOOF.values()]


@all_stacks
def test_client_sent_identity_headers_never_reach_the_upstream(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)

    # Anonymous on a bypass route: the daemon knows no user, the proxy must still drop them.
    anon = st.client()
    for variant in SPOOF_VARIANTS:
        r = anon.browser_get(st.url(PUBLIC, "/"), headers=variant)
        assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
        assert not spoofed_identity(r.body), \
            f"{proxy}: client-sent identity reached the upstream: {spoofed_identity(r.body)}"
        assert all(v in ([], [""]) for v in identity(r.body).values()), r.text

    # Logged in as alice: exactly alice's identity, once, and none of the client's copies.
    c, _ = st.login("alice")
    for variant in SPOOF_VARIANTS:
        r = c.browser_get(st.url(APP, "/"), headers=variant)
        assert r.status == 200, r.text
        assert identity(r.body) == expected_identity("alice"), r.text
        assert not spoofed_identity(r.body), \
            f"{proxy}: client-sent identity reached the upstream: {spoofed_identity(r.body)}"

    # And a spoofed admin group does not open the admin app.
    r = c.browser_get(st.url(ADMIN, "/"), headers=list(SPOOF.items()))
    assert r.status == 403, f"{r.status} {r.text}"


# ----------------------------------------------------------------------------------------
# Access control: a group rule
# ----------------------------------------------------------------------------------------

@all_stacks
def test_group_rule_gives_403_to_others_and_lets_the_group_in(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)
    admin_url = st.url(ADMIN, "/console")

    # Anonymous + subject rule: log in first, not 403.
    r = st.client().browser_get(admin_url)
    assert r.status == 302 and portal_redirect(st, r.header("Location")) == (admin_url, "GET")

    alice, _ = st.login("alice")
    r = alice.browser_get(admin_url)
    assert r.status == 403, f"{r.status} {r.text}\n{st.logs()}"
    assert st.upstream.requests == []

    boss, _ = st.login("admin")
    r = boss.browser_get(admin_url)
    assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
    assert identity(r.body) == expected_identity("admin")


# ----------------------------------------------------------------------------------------
# Logout
# ----------------------------------------------------------------------------------------

@all_stacks
def test_logout_ends_the_session_server_side(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)
    target = st.url(APP, "/after")

    def with_cookie(value):
        c = st.client()
        r = c.browser_get(target, headers={"Cookie": f"halos_session={value}"}, cookies=False)
        return r

    # Browser logout: GET /sso/logout?rd=<app> follows the safe rd; the app then asks for a login.
    c, _ = st.login("alice")
    old = c.cookie("halos_session").value
    assert with_cookie(old).status == 200
    r = c.browser_get(st.url(DOMAIN, "/sso/logout") + "?rd=" + urllib.parse.quote(target, safe=""))
    assert r.status in (302, 303), f"{r.status} {r.text}"
    assert r.header("Location") == target, r.header("Location")
    assert c.cookie("halos_session") is None, "logout did not clear the cookie"
    r = with_cookie(old)
    assert r.status == 302 and portal_redirect(st, r.header("Location")) == (target, "GET"), \
        f"old cookie still works after GET /sso/logout: {r.status} {r.text}"

    # Without rd, the browser lands on the portal.
    c, _ = st.login("alice")
    r = c.browser_get(st.url(DOMAIN, "/sso/logout"))
    assert r.status in (302, 303), f"{r.status} {r.text}"
    loc = urllib.parse.urljoin(st.url(DOMAIN, "/sso/logout"), r.header("Location"))
    assert loc.startswith(st.portal + "/"), loc

    # JSON logout (the SPA's way).
    c, _ = st.login("alice")
    old = c.cookie("halos_session").value
    r = c.post_json(st.url(DOMAIN, "/sso/api/logout"), {"targetURL": target})
    assert r.status == 200, r.text
    assert r.json() == {"status": "OK", "data": {"safeTargetURL": True}}, r.text
    r = with_cookie(old)
    assert r.status == 302, f"old cookie still works after POST /sso/api/logout: {r.status} {r.text}"


# ----------------------------------------------------------------------------------------
# Sessions survive a daemon restart
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("proxy", PROXIES)
def test_session_survives_a_daemon_restart(make_stack, proxy):
    st = make_stack(proxy, "https", fixed_daemon_port=True)
    c, _ = st.login("alice")
    r = c.browser_get(st.url(APP, "/"))
    assert r.status == 200 and identity(r.body) == expected_identity("alice")

    port = st.daemon.port
    st.daemon.restart()
    assert st.daemon.port == port

    r = c.browser_get(st.url(APP, "/again"))
    assert r.status == 200, f"session lost over a restart: {r.status} {r.text}\n{st.logs()}"
    assert identity(r.body) == expected_identity("alice")

    # Logging out after the restart still ends it.
    old = c.cookie("halos_session").value
    c.post_json(st.url(DOMAIN, "/sso/api/logout"), {})
    r = st.client().browser_get(st.url(APP, "/"), headers={"Cookie": f"halos_session={old}"},
                                cookies=False)
    assert r.status == 302


# ----------------------------------------------------------------------------------------
# The HTML login form in real Chromium
# ----------------------------------------------------------------------------------------

def _step(result, i):
    """Step `i` of a browser scenario, or a failure that says where the scenario stopped."""
    for st in result["steps"]:
        if st["step"] == i:
            return st
    raise AssertionError(f"browser scenario stopped before step {i}: {result['error']}\n"
                         f"steps: {json.dumps(result['steps'], indent=1)[:3000]}")


def _app_identity(snapshot):
    seen = json.loads(snapshot["body"])
    return {name: header_values(seen["headers"], name) for name in IDENTITY_HEADERS}


@all_stacks
def test_chromium_login_form_and_logout(make_stack, proxy, scheme):
    """Real Chromium: (A) anonymous -> portal with rd -> wrong password -> error -> right password
    -> back on the app -> logout -> portal; (B) a session from the JSON API -> app -> logout ->
    portal. Both in one browser, each in its own fresh context."""
    st = make_stack(proxy, scheme)
    target = st.url(APP, TARGET_PATH)
    logout = st.url(DOMAIN, "/sso/logout")
    api_client, _ = st.login("alice")
    api_cookie = api_client.cookie("halos_session").value
    form = {"steps": [
        {"op": "goto", "url": target},                                                      # 0
        {"op": "fill", "selector": "input[name=username]", "value": "alice"},
        {"op": "fill", "selector": "input[name=password]", "value": "not the password"},
        {"op": "click", "selector": "#sign-in"},                                            # 3
        {"op": "fill", "selector": "input[name=username]", "value": "alice"},
        {"op": "fill", "selector": "input[name=password]", "value": USERS["alice"][3]},
        {"op": "click", "selector": "#sign-in"},                                            # 6
        {"op": "cookies"},                                                                  # 7
        {"op": "goto", "url": logout},                                                      # 8
        {"op": "goto", "url": target},                                                      # 9
    ]}
    api = {"cookies": [{"name": "halos_session", "value": api_cookie, "domain": "." + DOMAIN,
                        "path": "/", "httpOnly": True, "secure": scheme == "https",
                        "sameSite": "Lax"}],
           "steps": [
               {"op": "goto", "url": target},                                               # 0
               {"op": "goto", "url": logout},                                               # 1
               {"op": "cookies"},                                                           # 2
               {"op": "goto", "url": target},                                               # 3
           ]}
    res_form, res_api = run_browser([form, api])

    def on_portal_with_rd(snap):
        u = urllib.parse.urlsplit(snap["url"])
        return (f"{u.scheme}://{u.netloc}{u.path}" == st.portal + "/"
                and urllib.parse.parse_qs(u.query).get("rd") == [target])

    def dead(cookie_value):
        r = st.client().browser_get(target, headers={"Cookie": f"halos_session={cookie_value}"},
                                    cookies=False)
        return r.status == 302

    # (B) The browser carries the session to the app; logout lands on the portal, the cookie is
    # gone from the browser and dead on the server.
    landed = _step(res_api, 0)
    assert landed["url"] == target and landed["status"] == 200, f"{landed}\n{st.logs()}"
    assert _app_identity(landed) == expected_identity("alice")
    out = _step(res_api, 1)
    assert out["url"].startswith(st.portal + "/"), out
    assert not [c for c in _step(res_api, 2)["cookies"] if c["name"] == "halos_session"], \
        "logout left the session cookie in the browser"
    assert on_portal_with_rd(_step(res_api, 3)), _step(res_api, 3)
    assert dead(api_cookie), "the session cookie still works after a browser logout"

    # (A) The HTML form.
    first = _step(res_form, 0)
    assert on_portal_with_rd(first), first
    failed = _step(res_form, 3)
    assert failed["url"].startswith(st.portal + "/"), failed
    assert failed["alert"] == "Incorrect username or password.", \
        f"wrong password: expected the credentials error, got {failed['status']} {failed['alert']!r}"
    landed = _step(res_form, 6)
    assert landed["url"] == target, \
        f"the form login did not return to the app: {landed['status']} {landed['url']} " \
        f"alert={landed['alert']!r}\n{st.logs()}"
    assert _app_identity(landed) == expected_identity("alice")
    session = [c for c in _step(res_form, 7)["cookies"] if c["name"] == "halos_session"]
    assert len(session) == 1, session
    assert session[0]["domain"].lstrip(".") == DOMAIN and session[0]["httpOnly"]
    assert session[0]["secure"] == (scheme == "https")
    assert _step(res_form, 8)["url"].startswith(st.portal + "/"), _step(res_form, 8)
    assert on_portal_with_rd(_step(res_form, 9)), _step(res_form, 9)
    assert dead(session[0]["value"]), "the form session still works after logout"


# ----------------------------------------------------------------------------------------
# Open redirects
# ----------------------------------------------------------------------------------------

HOSTILE = [
    # protocol-relative and slash/backslash mixes
    "//evil.test", "//evil.test/", "///evil.test", "////evil.test/x", "/\\evil.test", "\\/evil.test",
    "\\\\evil.test", "/\\/evil.test", "/%5Cevil.test", "%2F%2Fevil.test", "%252F%252Fevil.test",
    # absolute foreign URLs and scheme tricks
    "https://evil.test", "https://evil.test/", "http://evil.test/", "https:evil.test",
    "https:/evil.test", "https:///evil.test", "https:\\\\evil.test", "https:/\\evil.test",
    "wss://evil.test/", "ws://evil.test/", "ftp://evil.test/", "HTTPS://EVIL.TEST/",
    # userinfo, fragment and query confusion
    "https://halos.test@evil.test", "https://halos.test:443@evil.test/", "https://app.halos.test%40evil.test/",
    "https://halos.test%2F@evil.test", "https://evil.test#@halos.test", "https://evil.test?@halos.test",
    "https://evil.test\\@halos.test", "https://evil.test%5C@halos.test", "//halos.test@evil.test",
    "https://evil.test/https://halos.test/", "https://evil.test/.halos.test",
    # suffix / label-boundary tricks
    "https://halos.test.evil.test", "https://app.halos.test.evil.test/", "https://halos.testevil.test",
    "https://evilhalos.test", "https://xhalos.test/", "https://halos.test%2Eevil.test",
    "https://evil.test%00.halos.test", "https://evil.test%09.halos.test",
    # tab / newline / control characters
    "\thttps://evil.test", "https://evil.test\t", "ht\ttps://evil.test", "https://ev\til.test",
    "\n//evil.test", "/\t/evil.test", "/\n/evil.test", "/\r/evil.test", " //evil.test", "\x00//evil.test",
    # encoded whole URLs
    "https%3A%2F%2Fevil.test", "https:%2F%2Fevil.test", "%68ttps://evil.test",
    # unicode look-alikes (Cyrillic a and e, fullwidth and ideographic full stops)
    "https://h\u0430los.test/", "https://app.halos.t\u0435st/", "https://app.halos.test\uff0eevil.test/",
    "https://halos\u3002test\u3002evil.test/", "https://evil\u3002test/", "https://\uff45vil.test/",
    # IP literals
    "https://127.0.0.1/", "https://[::1]/", "https://2130706433/",
    # script and data
    "javascript:alert(1)", "JavaScript:alert(document.domain)", "java\tscript:alert(1)",
    "javascript://app.halos.test/%0aalert(1)", "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "vbscript:msgbox(1)",
    "file:///etc/passwd",
]
assert len(HOSTILE) >= 50


C0_AND_SPACE = "".join(chr(i) for i in range(0x21))
SPECIAL_SCHEMES = {"http", "https", "ws", "wss", "ftp", "file"}


def browser_destination(value, base):
    """(scheme, host) a browser navigates to for `value` relative to `base`, following the WHATWG URL
    parser's rules for special schemes (backslash = slash, tab/newline removed, leading C0/space
    trimmed, any run of slashes before the authority, last '@' ends userinfo, host percent-decoded
    and IDNA-mapped)."""
    b = urllib.parse.urlsplit(base)
    s = value.strip(C0_AND_SPACE)
    s = re.sub(r"[\t\n\r]", "", s)
    m = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", s)
    if m:
        scheme, rest = m.group(1).lower(), s[m.end():]
        if scheme not in SPECIAL_SCHEMES or scheme == "file":
            return scheme, None
        if scheme == b.scheme:
            lead = re.match(r"[/\\]*", rest).group(0)
            if len(lead) < 2:
                return scheme, b.hostname  # same-origin relative reference
    else:
        scheme, rest = b.scheme, s
        if not re.match(r"[/\\]{2}", rest):
            return scheme, b.hostname  # path, query or fragment on the same origin
    rest = rest.lstrip("/\\")
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        return scheme, host
    host = urllib.parse.unquote(host.split(":", 1)[0])
    try:
        host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return scheme, "<invalid>"
    if not re.fullmatch(r"[a-z0-9.\-]+", host):
        return scheme, "<invalid>"  # a forbidden host code point: the browser does not navigate
    return scheme, host


def is_safe(value, base, scheme):
    allowed = {"https", "wss"} | ({"http", "ws"} if scheme == "http" else set())
    dest_scheme, host = browser_destination(value, base)
    return dest_scheme in allowed and host is not None and (
        host == DOMAIN or host.endswith("." + DOMAIN))


# Hostile inputs that a browser resolves on the portal's own origin when emitted verbatim (they are
# still fed to the daemon: a daemon that decodes or re-parses them into a foreign URL is caught).
SAME_ORIGIN_ON_HTTPS = {"https:evil.test", "https:/evil.test", "/%5Cevil.test", "%2F%2Fevil.test",
                        "%252F%252Fevil.test", "https%3A%2F%2Fevil.test", "https:%2F%2Fevil.test",
                        "%68ttps://evil.test", "https://evil.test%5C@halos.test"}


def test_the_judge_itself():
    base = "https://halos.test:8443/sso/"
    for v in HOSTILE:
        assert is_safe(v, base, "https") == (v in SAME_ORIGIN_ON_HTTPS), v
    for v in ("https://app.halos.test/x", "/sso/?a=1", "x", "https://HALOS.test:1/",
              "https:/evil.test", "https://halos.test\\@evil.test", "https://app.\uff48alos.test/"):
        assert is_safe(v, base, "https"), v
    assert not is_safe("http://app.halos.test/", base, "https")
    assert is_safe("http://app.halos.test/", base.replace("https", "http"), "http")


@all_stacks
def test_no_hostile_redirect_target_is_followed(make_stack, proxy, scheme):
    st = make_stack(proxy, scheme)
    portal = st.portal + "/"
    firstfactor = st.url(DOMAIN, "/sso/api/firstfactor")
    logout_api = st.url(DOMAIN, "/sso/api/logout")
    hostile = HOSTILE + (["http://app.halos.test/downgrade"] if scheme == "https" else [])
    good = st.url(APP, "/fine")
    user, password = "alice", USERS["alice"][3]
    problems = []

    logged_in, _ = st.login(user)
    anon = st.client()
    former = st.client()
    page = former.browser_get(portal)
    m = re.search(r'<input[^>]*name="csrf"[^>]*value="([^"]+)"', page.text)
    assert page.status == 200 and m, f"no CSRF field on the portal: {page.status} {page.text[:500]}"
    csrf = m.group(1)

    def form_login(v):
        body = urllib.parse.urlencode({"username": user, "password": password, "rd": v, "rm": "GET",
                                       "csrf": csrf})
        return former.request("POST", st.url(DOMAIN, "/sso/login"), body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html",
            "Origin": st.url(DOMAIN, "").rstrip("/")})

    def q(v):
        return urllib.parse.quote(v, safe="")

    def check_location(what, r, base, v):
        loc = r.header("Location")
        if loc is not None and not is_safe(loc, base, scheme):
            problems.append(f"{what} rd={v!r}: {r.status} Location {loc!r}")

    def firstfactor_redirect(v):
        r = Client(scheme, st.port).post_json(firstfactor, {
            "username": user, "password": password, "keepMeLoggedIn": False, "targetURL": v})
        assert r.status == 200, f"{r.status} {r.text}\n{st.logs()}"
        return r.json().get("data", {}).get("redirect")

    # Positive controls: a safe target is followed everywhere, so the checks below can fail.
    assert firstfactor_redirect(good) == good
    r = anon.browser_get(st.url(DOMAIN, "/sso/logout?rd=" + q(good)))
    assert r.header("Location") == good, f"{r.status} {r.header('Location')}"
    r = logged_in.browser_get(portal + "?rd=" + q(good))
    assert r.status in (302, 303) and r.header("Location") == good, \
        f"logged-in portal visit with a safe rd: {r.status} {r.header('Location')}"
    r = Client(scheme, st.port).post_json(logout_api, {"targetURL": good})
    assert r.json()["data"]["safeTargetURL"] is True, r.text
    r = form_login(good)
    assert r.status == 303 and r.header("Location") == good, f"{r.status} {r.header('Location')}"

    for v in hostile:
        # The portal, anonymous (renders the form) and logged in (may redirect).
        for who, c in (("anonymous", anon), ("logged-in", logged_in)):
            r = c.browser_get(portal + "?rd=" + q(v))
            assert r.status < 500, f"portal rd={v!r}: {r.status}"
            check_location(f"portal ({who})", r, portal, v)
        # Browser logout.
        r = anon.browser_get(st.url(DOMAIN, "/sso/logout?rd=") + q(v))
        check_location("GET /sso/logout", r, st.url(DOMAIN, "/sso/logout"), v)
        # The portal's HTML form.
        r = form_login(v)
        assert r.status == 303, f"form login rd={v!r}: {r.status} {r.text[:300]}"
        check_location("POST /sso/login", r, st.url(DOMAIN, "/sso/login"), v)
        # JSON login.
        red = firstfactor_redirect(v)
        if red is not None and not is_safe(red, portal, scheme):
            problems.append(f"firstfactor targetURL={v!r}: data.redirect {red!r}")
        # JSON logout: the SPA follows targetURL when the daemon calls it safe.
        r = Client(scheme, st.port).post_json(logout_api, {"targetURL": v})
        assert r.status == 200, r.text
        if r.json().get("data", {}).get("safeTargetURL") and not is_safe(v, portal, scheme):
            problems.append(f"POST /sso/api/logout targetURL={v!r}: safeTargetURL true")

    assert not problems, "\n".join(problems)
