// Drives Debian's Chromium with playwright-core through a list of steps given as JSON on stdin:
//   {"chromium": "/usr/bin/chromium", "profile": DIR, "steps": [{"op": ...}, ...]}
// and prints one JSON line per step with what the browser saw. It asserts nothing itself: the
// pytest side decides. It never downloads a browser (executablePath is always given).
//
// ops: goto {url} | fill {selector, value} | check {selector} | click {selector} (waits for the
//      navigation it causes) | cookies | text {selector}
// Each navigation step reports: url (after redirects), status, title, body (innerText), alert
// (text of [role=alert] if any) and the chain of redirects the main request went through.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const spec = JSON.parse(fs.readFileSync(0, 'utf8'));
fs.mkdirSync(spec.profile, { recursive: true });

const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-features=HttpsUpgrades',
  '--host-resolver-rules=MAP *.halos.test 127.0.0.1, MAP halos.test 127.0.0.1',
  '--ignore-certificate-errors',
];

// launchPersistentContext passes --user-data-dir=<profile> (a fresh directory per test).
const context = await chromium.launchPersistentContext(spec.profile, {
  executablePath: spec.chromium,
  headless: true,
  chromiumSandbox: false,
  args,
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
    body: await page.evaluate(() => document.body ? document.body.innerText : ''),
    alert: alertText,
    redirects: chain,
  };
}

let failed = false;
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  for (const [i, step] of spec.steps.entries()) {
    let out = { step: i, op: step.op };
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
      case 'text':
        out.text = await page.locator(step.selector).first().innerText();
        break;
      case 'cookies':
        out.cookies = await context.cookies();
        break;
      default:
        throw new Error(`unknown op ${step.op}`);
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
} catch (e) {
  failed = true;
  process.stderr.write(`${e.stack || e}\n`);
} finally {
  await context.close();
}
process.exit(failed ? 1 : 0);
