// Drives Debian's Chromium with playwright-core through scenarios given as JSON on stdin:
//   {"chromium": "/usr/bin/chromium", "scenarios": [{"cookies": [...], "steps": [{"op": ...}, ...]}]}
// Each scenario runs in its own fresh browser context (its own cookie jar) of one browser, whose
// profile is a fresh temporary --user-data-dir that playwright-core creates and removes. It prints
// one JSON line per step with what the browser saw, and one {"scenario": i, "error": ...} line for a
// scenario that could not go on; it asserts nothing itself (the pytest side decides). It never
// downloads a browser: executablePath is always given.
//
// ops: goto {url} | fill {selector, value} | check {selector} | click {selector} (waits for the
//      navigation it causes) | press {selector, wait} (clicks, waits for `wait` to be visible, no
//      navigation expected) | cookies | authenticator (adds a CDP virtual WebAuthn authenticator:
//      ctap2, internal, resident keys, user verification) | credentials (what it holds)
// `spki` (optional): public-key hashes whose certificates count as valid (WebAuthn refuses pages
// with certificate errors, so `--ignore-certificate-errors` alone is not enough for it).
// A navigation step reports: url (after redirects), status, title, body (innerText), alert (text of
// [role=alert], if any) and the redirects the main request went through.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const spec = JSON.parse(fs.readFileSync(0, 'utf8'));

const browser = await chromium.launch({
  executablePath: spec.chromium,
  headless: true,
  chromiumSandbox: false, // --no-sandbox
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-features=HttpsUpgrades',
    '--host-resolver-rules=MAP *.halos.test 127.0.0.1, MAP halos.test 127.0.0.1',
    '--ignore-certificate-errors',
    ...(spec.spki ? [`--ignore-certificate-errors-spki-list=${spec.spki.join(',')}`] : []),
  ],
  timeout: 30000,
});

async function snapshot(page, response) {
  const chain = [];
  if (response) {
    for (let r = response.request().redirectedFrom(); r; r = r.redirectedFrom()) {
      const resp = await r.response();
      chain.unshift({ url: r.url(), status: resp ? resp.status() : null,
                      location: resp ? await resp.headerValue('location') : null });
    }
  }
  const alert = page.locator('[role=alert]');
  const alertText = (await alert.count()) ? (await alert.first().innerText()).trim() : null;
  return {
    url: page.url(),
    status: response ? response.status() : null,
    title: await page.title(),
    body: await page.evaluate(() => (document.body ? document.body.innerText : '')),
    alert: alertText,
    redirects: chain,
  };
}

const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');

try {
  for (const [s, scenario] of spec.scenarios.entries()) {
    const context = await browser.newContext();
    try {
      if (scenario.cookies && scenario.cookies.length) await context.addCookies(scenario.cookies);
      const page = await context.newPage();
      page.setDefaultTimeout(15000);
      let cdp = null;
      let authenticatorId = null;
      for (const [i, step] of scenario.steps.entries()) {
        let out = { scenario: s, step: i, op: step.op };
        switch (step.op) {
          case 'goto': {
            const response = await page.goto(step.url, { waitUntil: 'load' });
            out = { ...out, ...(await snapshot(page, response)) };
            break;
          }
          case 'fill':
            await page.fill(step.selector, step.value);
            break;
          case 'check':
            await page.check(step.selector);
            break;
          case 'click': {
            const [response] = await Promise.all([
              page.waitForNavigation({ waitUntil: 'load' }),
              page.click(step.selector),
            ]);
            out = { ...out, ...(await snapshot(page, response)) };
            break;
          }
          case 'press': {
            await page.click(step.selector);
            await page.locator(step.wait).first().waitFor({ state: 'visible' });
            out = { ...out, ...(await snapshot(page, null)) };
            break;
          }
          case 'cookies':
            out.cookies = await context.cookies();
            break;
          case 'authenticator': {
            cdp = await context.newCDPSession(page);
            await cdp.send('WebAuthn.enable');
            const r = await cdp.send('WebAuthn.addVirtualAuthenticator', {
              options: {
                protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
                hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
              },
            });
            authenticatorId = r.authenticatorId;
            break;
          }
          case 'credentials': {
            const r = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
            out.credentials = r.credentials.map((c) => ({
              rpId: c.rpId, isResidentCredential: c.isResidentCredential, signCount: c.signCount,
            }));
            break;
          }
          default:
            throw new Error(`unknown op ${step.op}`);
        }
        emit(out);
      }
    } catch (e) {
      emit({ scenario: s, error: String(e.stack || e) });
    } finally {
      await context.close();
    }
  }
} finally {
  await browser.close();
}
