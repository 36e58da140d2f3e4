// halos-authd with the npm openid-client (v6) relying-party library: discovery,
// authorization code + PKCE through the portal login, token, ID-token validation (by the
// library, signature included), userinfo, refresh rotation and reuse detection,
// introspection, revocation and end-session, for a client_secret_basic, a
// client_secret_post (hashed secret on the daemon side) and a public client.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import * as client from 'openid-client'

import { Browser, CLIENTS, ISSUER, expectedClaims, proxyFetch } from './common.mjs'

async function configure (clientId) {
  const c = CLIENTS[clientId]
  const auth = {
    client_secret_basic: () => client.ClientSecretBasic(c.secret),
    client_secret_post: () => client.ClientSecretPost(c.secret),
    none: () => client.None()
  }[c.auth_method]()
  // No allowInsecureRequests: the library sees https URLs only (proxyFetch maps them).
  const config = await client.discovery(new URL(ISSUER), clientId, undefined, auth,
    { [client.customFetch]: proxyFetch })
  config[client.customFetch] = proxyFetch
  // Verify ID-token signatures against the JWKS (openid-client trusts TLS by default).
  client.enableNonRepudiationChecks(config)
  return config
}

async function codeFlow (config, clientId, browser, { viaPortal = false } = {}) {
  const c = CLIENTS[clientId]
  const verifier = client.randomPKCECodeVerifier()
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: c.redirect_uris[0],
    scope: c.scopes.join(' '),
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce
  })
  const callback = viaPortal
    ? await browser.authorizeThroughPortal(url.href)
    : await browser.authorize(url.href)
  assert.equal(callback.origin + callback.pathname, c.redirect_uris[0])
  assert.equal(callback.searchParams.get('iss'), ISSUER)
  // openid-client checks state, iss (RFC 9207), the code exchange, PKCE, and the ID token:
  // signature against the JWKS, iss, aud, exp, iat, nonce.
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true
  })
  return { tokens, claims: tokens.claims(), nonce }
}

for (const clientId of ['basic-app', 'post-app', 'spa']) {
  describe(`openid-client with ${clientId} (${CLIENTS[clientId].auth_method})`, () => {
    test('discovery', async () => {
      const config = await configure(clientId)
      const meta = config.serverMetadata()
      assert.equal(meta.issuer, ISSUER)
      assert.ok(meta.supportsPKCE('S256'))
      assert.equal(meta.authorization_response_iss_parameter_supported, true)
    })

    test('code + PKCE through the portal, ID token, userinfo', async () => {
      const config = await configure(clientId)
      const browser = new Browser()
      const { tokens, claims } = await codeFlow(config, clientId, browser, { viaPortal: true })
      assert.equal(claims.iss, ISSUER)
      assert.equal(claims.aud, clientId)
      assert.ok(claims.sub && claims.sub !== 'alice')
      for (const [k, v] of Object.entries(expectedClaims(clientId))) assert.deepEqual(claims[k], v, k)
      assert.equal(tokens.token_type.toLowerCase(), 'bearer')
      assert.ok(tokens.expiresIn() > 0)
      assert.ok(tokens.refresh_token, 'offline_access: a refresh token is due')
      // fetchUserInfo requires sub to equal the ID token's.
      const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
      for (const [k, v] of Object.entries(expectedClaims(clientId))) assert.deepEqual(info[k], v, k)
    })

    test('refresh: rotation, then reuse revokes the family', async () => {
      const config = await configure(clientId)
      const browser = new Browser()
      await browser.login('alice')
      const { tokens, claims } = await codeFlow(config, clientId, browser)
      const t2 = await client.refreshTokenGrant(config, tokens.refresh_token)
      assert.ok(t2.refresh_token && t2.refresh_token !== tokens.refresh_token)
      assert.notEqual(t2.access_token, tokens.access_token)
      const c2 = t2.claims()
      assert.equal(c2.sub, claims.sub)
      assert.equal(c2.auth_time, claims.auth_time)
      await client.fetchUserInfo(config, t2.access_token, claims.sub)
      await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token),
        e => e instanceof client.ResponseBodyError && e.error === 'invalid_grant')
      await assert.rejects(client.refreshTokenGrant(config, t2.refresh_token),
        e => e instanceof client.ResponseBodyError && e.error === 'invalid_grant')
      await assert.rejects(client.fetchUserInfo(config, t2.access_token, claims.sub),
        e => e instanceof client.WWWAuthenticateChallengeError || e.status === 401)
    })

    test('revocation and end-session', async () => {
      const config = await configure(clientId)
      const browser = new Browser()
      await browser.login('alice')
      const { tokens, claims } = await codeFlow(config, clientId, browser)
      if (CLIENTS[clientId].auth_method !== 'none') {
        const active = await client.tokenIntrospection(config, tokens.access_token)
        assert.equal(active.active, true)
        assert.equal(active.sub, claims.sub)
        assert.equal(active.client_id, clientId)
      }
      await client.tokenRevocation(config, tokens.refresh_token, { token_type_hint: 'refresh_token' })
      await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token),
        e => e instanceof client.ResponseBodyError && e.error === 'invalid_grant')
      if (CLIENTS[clientId].auth_method !== 'none') {
        const gone = await client.tokenIntrospection(config, tokens.access_token)
        assert.equal(gone.active, false)
      }
      // RP-initiated logout with a registered post_logout_redirect_uri.
      const target = CLIENTS[clientId].post_logout_redirect_uris[0]
      const end = client.buildEndSessionUrl(config, {
        id_token_hint: tokens.id_token, post_logout_redirect_uri: target, state: 'bye-1'
      })
      const r = await browser.get(end.href)
      assert.equal(r.status, 302)
      assert.equal(r.headers.get('location'), `${target}?state=bye-1`)
      const state = await (await browser.get(`${ISSUER}/api/state`)).json()
      assert.ok(!state.data?.username, 'the SSO session must be over')
    })
  })
}
