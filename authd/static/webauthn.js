// Passkeys for the HaLOS portal: registration on /settings (#passkey-register) and
// sign-in on the portal (#passkey-sign-in). Served from /static (CSP script-src 'self').
(function () {
  "use strict";

  function toBytes(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64u(buf) {
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function showError(msg) {
    var el = document.getElementById("passkey-error");
    if (el) { el.textContent = msg; el.hidden = false; }
  }

  async function post(url, body, csrf) {
    var headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    var r = await fetch(url, {
      method: "POST", credentials: "same-origin", headers: headers,
      body: body === undefined ? "{}" : JSON.stringify(body)
    });
    var data = {};
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) throw new Error(data.message || ("Request failed (" + r.status + ")."));
    return data;
  }

  async function register(button) {
    var prefix = button.dataset.prefix, csrf = button.dataset.csrf;
    var nameInput = document.getElementById("passkey-name");
    var options = await post(prefix + "/api/webauthn/register/start", {}, csrf);
    var pk = options.publicKey;
    pk.challenge = toBytes(pk.challenge);
    pk.user.id = toBytes(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    var cred = await navigator.credentials.create({ publicKey: pk });
    var credential = {
      id: cred.id, rawId: toB64u(cred.rawId), type: cred.type,
      extensions: cred.getClientExtensionResults(),
      response: {
        attestationObject: toB64u(cred.response.attestationObject),
        clientDataJSON: toB64u(cred.response.clientDataJSON),
        transports: cred.response.getTransports ? cred.response.getTransports() : undefined
      }
    };
    await post(prefix + "/api/webauthn/register/finish",
      { name: nameInput ? nameInput.value : "", credential: credential }, csrf);
    window.location.reload();
  }

  async function signIn(button) {
    var prefix = button.dataset.prefix;
    var options = await post(prefix + "/api/webauthn/login/start");
    var pk = options.publicKey;
    pk.challenge = toBytes(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    var cred = await navigator.credentials.get({ publicKey: pk });
    var r = cred.response;
    var credential = {
      id: cred.id, rawId: toB64u(cred.rawId), type: cred.type,
      extensions: cred.getClientExtensionResults(),
      response: {
        authenticatorData: toB64u(r.authenticatorData),
        clientDataJSON: toB64u(r.clientDataJSON),
        signature: toB64u(r.signature),
        userHandle: r.userHandle ? toB64u(r.userHandle) : null
      }
    };
    var result = await post(prefix + "/api/webauthn/login/finish",
      { credential: credential, targetURL: button.dataset.rd || "" });
    if (result.data && result.data.redirect) {
      window.location.assign(result.data.redirect);
    } else {
      window.location.assign(prefix + "/" + (button.dataset.rd ? "?rd=" + encodeURIComponent(button.dataset.rd) : ""));
    }
  }

  function wire(id, action) {
    var button = document.getElementById(id);
    if (!button) return;
    if (!window.PublicKeyCredential) {
      button.disabled = true;
      showError("This browser does not support passkeys here (a secure https address is needed).");
      return;
    }
    button.addEventListener("click", function () {
      button.disabled = true;
      action(button).catch(function (e) {
        showError(e && e.message ? e.message : "The passkey operation failed.");
      }).finally(function () { button.disabled = false; });
    });
  }

  wire("passkey-register", register);
  wire("passkey-sign-in", signIn);
}());
