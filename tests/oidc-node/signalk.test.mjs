// The Signal K server's OIDC login (reference/halos.md C; signalk-server src/oidc), done
// the way Signal K does it: its own fetch calls, client_secret_post with PKCE S256, state
// and nonce, then `jose.jwtVerify` against the provider's JWKS with the exact issuer, the
// client id as audience and 300 s clock tolerance, then a userinfo GET with the Bearer
// token whose `sub` must match. HaLOS's wiring: client `signalk`, scope
// "openid email profile groups", groups admins → admin, users → readwrite.
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { test } from 'node:test'
import * as jose from 'jose'

import { Browser, CLIENTS, ISSUER, USERS, proxyFetch } from './common.mjs'

const b64url = buf => Buffer.from(buf).toString('base64url')
const SIGNALK = CLIENTS.signalk

function permissionFor (groups) {
  // permission-mapping.ts: exact, case-sensitive; admin groups first, then readwrite.
  if (groups?.includes('admins')) return 'admin'
  if (groups?.includes('users')) return 'readwrite'
  return 'readonly'
}

async function signalkLogin (user) {
  // getDiscoveryDocument(issuer): trailing slash trimmed + /.well-known/openid-configuration
  const metaRes = await proxyFetch(`${ISSUER.replace(/\/+$/, '')}/.well-known/openid-configuration`)
  assert.equal(metaRes.status, 200)
  const meta = await metaRes.json()

  // createAuthState + buildAuthorizationUrl
  const state = b64url(randomBytes(32))
  const nonce = b64url(randomBytes(32))
  const codeVerifier = b64url(randomBytes(32))
  const codeChallenge = b64url(createHash('sha256').update(codeVerifier).digest())
  const redirectUri = SIGNALK.redirect_uris[0]
  const auth = new URL(meta.authorization_endpoint)
  for (const [k, v] of Object.entries({
    response_type: 'code',
    client_id: 'signalk',
    redirect_uri: redirectUri,
    scope: 'openid email profile groups',
    state,
    nonce,
    code_challenge: codeChallenge,
    code_challenge_method: 'S256'
  })) auth.searchParams.set(k, v)

  const browser = new Browser()
  const callback = await browser.authorizeThroughPortal(auth.href, user)
  assert.equal(callback.origin + callback.pathname, redirectUri)
  assert.equal(callback.searchParams.get('error'), null)
  assert.equal(callback.searchParams.get('state'), state)
  const code = callback.searchParams.get('code')
  assert.ok(code)

  // exchangeAuthorizationCode: client_secret_post, everything in the form body.
  const form = new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    client_id: 'signalk',
    client_secret: SIGNALK.secret,
    code_verifier: codeVerifier
  })
  const tokenRes = await proxyFetch(meta.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: form.toString()
  })
  const body = await tokenRes.json()
  assert.ok(tokenRes.ok, `token exchange failed: ${JSON.stringify(body)}`)
  assert.ok(body.access_token && body.id_token, 'access_token and id_token are required')

  // validateIdToken: JWKS → createLocalJWKSet → jwtVerify(issuer, audience, 300 s).
  const jwks = await (await proxyFetch(meta.jwks_uri)).json()
  const { payload } = await jose.jwtVerify(body.id_token, jose.createLocalJWKSet(jwks), {
    issuer: ISSUER,
    audience: 'signalk',
    clockTolerance: 300
  })
  assert.equal(payload.nonce, nonce)
  assert.equal(typeof payload.sub, 'string')
  assert.ok(payload.sub)

  // userinfo: GET with Bearer, on the issuer's host, plain JSON, same sub.
  const ui = new URL(meta.userinfo_endpoint)
  assert.equal(ui.host, new URL(ISSUER).host)
  const infoRes = await proxyFetch(ui.href, { headers: { Authorization: `Bearer ${body.access_token}` } })
  assert.equal(infoRes.status, 200)
  assert.match(infoRes.headers.get('content-type'), /^application\/json/)
  const info = await infoRes.json()
  assert.equal(info.sub, payload.sub)
  return { meta, payload, info, body }
}

test('Signal K: login as an admin', async () => {
  const { payload, info } = await signalkLogin('alice')
  const u = USERS.alice
  for (const src of [payload, info]) {
    assert.equal(src.email, u.email)
    assert.equal(src.name, u.name)
    assert.equal(src.preferred_username, 'alice')
    assert.deepEqual(src.groups, u.groups)
  }
  // Signal K's username = preferred_username || email || oidc-<sub>; permission by groups.
  assert.equal(payload.preferred_username || payload.email || `oidc-${payload.sub}`, 'alice')
  assert.equal(permissionFor(payload.groups), 'admin')
})

test('Signal K: login as a crew member', async () => {
  const { payload, info } = await signalkLogin('bob')
  assert.equal(permissionFor(payload.groups), 'readwrite')
  assert.equal(permissionFor(info.groups), 'readwrite')
})

test('Signal K: an ID token for another audience or issuer is refused by jose', async () => {
  const { meta, body } = await signalkLogin('alice')
  const keys = jose.createLocalJWKSet(await (await proxyFetch(meta.jwks_uri)).json())
  await assert.rejects(jose.jwtVerify(body.id_token, keys, { issuer: ISSUER, audience: 'grafana', clockTolerance: 300 }))
  await assert.rejects(jose.jwtVerify(body.id_token, keys, { issuer: `${ISSUER}/`, audience: 'signalk', clockTolerance: 300 }))
})
