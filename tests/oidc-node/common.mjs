// Shared plumbing for the openid-client tests: the "reverse proxy" fetch that maps
// https://halos.test/sso/... to the daemon, a tiny browser (cookie jar + portal login),
// and the test configuration handed over by tests/e2e/test_oidc_node.py.
import assert from 'node:assert/strict'

const cfg = JSON.parse(process.env.OIDC_E2E_CONFIG ?? 'null')
if (!cfg) {
  throw new Error('OIDC_E2E_CONFIG is not set: run these through `pytest tests/e2e -k oidc_node`')
}
export const { issuer: ISSUER, upstream: UPSTREAM, host: HOST, clients: CLIENTS, users: USERS } = cfg

/**
 * fetch() for https://halos.test/...: sends the request to the daemon over plain HTTP with
 * the headers a TLS-terminating proxy adds, so every URL the library sees stays https and
 * the issuer stays exactly https://halos.test/sso. Anything else is a test bug.
 */
export async function proxyFetch (url, init = {}) {
  const u = new URL(url instanceof Request ? url.url : url)
  assert.equal(u.protocol, 'https:', `non-https request to ${u}`)
  assert.ok(u.hostname === HOST, `request to ${u}: only the SSO host is served`)
  assert.ok(u.pathname.startsWith('/sso/'), `request to ${u} is not for the SSO daemon`)
  const headers = new Headers(init.headers)
  headers.set('x-forwarded-host', u.host)
  headers.set('x-forwarded-proto', 'https')
  return fetch(UPSTREAM + u.pathname + u.search, { ...init, headers, redirect: 'manual' })
}

/** A browser: a cookie jar for halos.test, no automatic redirects. */
export class Browser {
  constructor () { this.cookies = new Map() }

  async request (url, init = {}) {
    const headers = new Headers(init.headers)
    if (this.cookies.size) {
      headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '))
    }
    const r = await proxyFetch(url, { ...init, headers })
    for (const c of r.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';')
      const i = pair.indexOf('=')
      const name = pair.slice(0, i).trim()
      const value = pair.slice(i + 1).trim()
      const expired = attrs.some(a => /^\s*max-age\s*=\s*0\s*$/i.test(a)) || value === ''
      if (expired) this.cookies.delete(name); else this.cookies.set(name, value)
    }
    return r
  }

  get (url) { return this.request(url) }

  /** POST /api/firstfactor, as the portal's JavaScript does. */
  async login (user, targetURL) {
    const body = { username: user, password: USERS[user].password, keepMeLoggedIn: false }
    if (targetURL) Object.assign(body, { targetURL, requestMethod: 'GET' })
    const r = await this.request(`${ISSUER}/api/firstfactor`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body)
    })
    const text = await r.text()
    assert.equal(r.status, 200, text)
    return JSON.parse(text)
  }

  /**
   * Follows an authorization URL like a browser with no SSO session: authorization →
   * portal → login → authorization → redirect to the app. Returns the callback URL.
   */
  async authorizeThroughPortal (authorizationUrl, user = 'alice') {
    let r = await this.get(authorizationUrl)
    assert.equal(r.status, 302, `expected a redirect to the portal, got ${r.status}`)
    const portal = new URL(r.headers.get('location'))
    assert.equal(portal.origin + portal.pathname, `${ISSUER}/`)
    const rd = portal.searchParams.get('rd')
    assert.ok(rd.startsWith(`${ISSUER}/api/oidc/authorization?`), rd)
    const login = await this.login(user, rd)
    assert.equal(login.data?.redirect, rd)
    r = await this.get(rd)
    assert.equal(r.status, 302)
    return new URL(r.headers.get('location'))
  }

  async authorize (authorizationUrl) {
    const r = await this.get(authorizationUrl)
    assert.equal(r.status, 302, `authorization answered ${r.status}`)
    return new URL(r.headers.get('location'))
  }
}

export function expectedClaims (clientId, user = 'alice') {
  const u = USERS[user]
  const scopes = CLIENTS[clientId].scopes
  const out = {}
  if (scopes.includes('profile')) Object.assign(out, { name: u.name, preferred_username: user })
  if (scopes.includes('email')) Object.assign(out, { email: u.email, email_verified: true })
  if (scopes.includes('groups')) Object.assign(out, { groups: u.groups })
  return out
}
