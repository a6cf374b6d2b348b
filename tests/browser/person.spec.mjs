// The person's half of the privacy center, in a real headless Chromium:
// a platform mints a console link; the person opens it from the platform's
// own site (a cross-site navigation, which the SameSite=Lax cookie
// survives), sees the seed figures, withdraws `rewards` and sees new events
// earn no points, downloads the export, erases and sees the receipt, and the
// link no longer opens. Every page is scanned with axe-core (no serious or
// critical findings) and screenshotted in zh-CN and en.
//
// Run by .ci/browser.sh, which passes BASE_URL, PLATFORM_KEY, OUT_DIR and
// BROWSER_NODE (where `npm install --prefix` put the packages).
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

// ES modules ignore NODE_PATH: load the packages from their own folder.
const require = createRequire(resolve(process.env.BROWSER_NODE ?? 'target/browser-node', 'index.js'));
const { chromium } = require('playwright-core');
const { AxeBuilder } = require('@axe-core/playwright');

const BASE = process.env.BASE_URL;
const KEY = process.env.PLATFORM_KEY;
const OUT = process.env.OUT_DIR ?? 'target/browser-output';
assert.ok(BASE && KEY, 'BASE_URL and PLATFORM_KEY are required');
mkdirSync(OUT, { recursive: true });

let passed = 0;
let failed = 0;
async function step(name, fn) {
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed += 1;
    console.log(`not ok - ${name}\n  ${String(e && e.stack || e).split('\n').join('\n  ')}`);
    throw e;
  }
}

async function api(method, path, body) {
  const response = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

// A person the platform knows by an id the service must never show.
const subject = `person-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const today = new Date().toISOString().slice(0, 10);

async function scan(page, label) {
  const results = await new AxeBuilder({ page }).analyze();
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`),
    [],
    `axe findings on ${label}`,
  );
}

/// Opens `path` in both languages: axe scan and a screenshot of each.
async function visit(page, path, name) {
  for (const lang of ['zh-CN', 'en']) {
    const response = await page.goto(`${BASE}${path}${path.includes('?') ? '&' : '?'}lang=${lang}`);
    assert.equal(response.status(), 200, `${path} in ${lang}`);
    assert.equal(await page.getAttribute('html', 'lang'), lang);
    await scan(page, `${name} (${lang})`);
    await page.screenshot({ path: join(OUT, `${name}-${lang}.png`), fullPage: true });
    const html = await page.content();
    assert.ok(!html.includes(subject), `the external id is not on ${name}`);
    assert.ok(!page.url().includes(subject), 'nor in the URL');
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
const context = await browser.newContext({ acceptDownloads: true, locale: 'zh-CN' });
const page = await context.newPage();
let openPath;

try {
  await step('the platform records a clean plate and mints a console link', async () => {
    for (const purpose of ['accounting', 'rewards']) {
      const r = await api('PUT', `/v1/subjects/${subject}/consents/${purpose}`, { notice_version: 1 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    const r = await api('POST', '/v1/events', {
      event_id: `${subject}-1`, subject, kind: 'clean_plate', occurred_at: `${today}T04:00:00Z`, region: '510502',
    });
    assert.equal(r.body.receipts[0].reduction_g, 144);
    assert.equal(r.body.receipts[0].points, 5);
    const link = await api('POST', `/v1/subjects/${subject}/console-links`);
    assert.equal(link.status, 201);
    openPath = link.body.path;
    assert.match(openPath, /^\/console\/open\/[A-Za-z0-9_-]{43}$/);
  });

  await step('the link, followed from the platform\'s own site, opens a session (SameSite=Lax)', async () => {
    // The platform's page, on another site: Playwright answers for it.
    await page.route('http://platform.test/**', (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: `<!doctype html><html lang="en"><title>Platform</title><a id="open" href="${BASE}${openPath}">My privacy center</a></html>`,
      }));
    await page.goto('http://platform.test/app');
    await Promise.all([page.waitForURL(`${BASE}/console/account`), page.click('#open')]);
    assert.ok(!page.url().includes('/open/'), 'no token in the URL after the redirect');
    // All cookies: Playwright's URL filter leaves Secure ones out for an
    // http:// URL, though Chromium keeps and sends them to 127.0.0.1 (a
    // secure context).
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '__Host-cl_session');
    assert.ok(session, 'the session cookie is set');
    assert.equal(session.secure, true);
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.equal(session.path, '/');
  });

  await step('the account shows the seed figures: 144 g and 5 points', async () => {
    await page.goto(`${BASE}/console/account?lang=en`);
    assert.match(await page.textContent('#reduction-g'), /^144\b/);
    assert.match(await page.textContent('#points-balance'), /^5\b/);
    assert.ok(await page.isVisible('svg.chart'), 'the month chart is drawn');
    assert.match(await page.textContent('#methodology-version'), /\S/);
  });

  await step('every page passes axe and is screenshotted in zh-CN and en', async () => {
    for (const [path, name] of [
      ['/console/account', 'account'],
      ['/console/records', 'records'],
      ['/console/consents', 'consents'],
      ['/console/accesses', 'accesses'],
      ['/console/export', 'export'],
      ['/console/erase', 'erase'],
    ]) {
      await visit(page, path, name);
    }
  });

  await step('the security headers are on every page', async () => {
    const response = await page.goto(`${BASE}/console/account`);
    const h = response.headers();
    assert.match(h['content-security-policy'], /default-src 'none'/);
    assert.match(h['content-security-policy'], /frame-ancestors 'none'/);
    assert.equal(h['referrer-policy'], 'no-referrer');
    assert.equal(h['cache-control'], 'no-store');
  });

  await step('withdrawing rewards with one click: new events earn no points', async () => {
    await page.goto(`${BASE}/console/consents?lang=en`);
    assert.equal(await page.getAttribute('#consent-rewards [data-state]', 'data-state'), 'granted');
    await Promise.all([page.waitForURL(`${BASE}/console/consents`), page.click('#consent-rewards button')]);
    assert.equal(await page.getAttribute('#consent-rewards [data-state]', 'data-state'), 'not-granted');
    const r = await api('POST', '/v1/events', {
      event_id: `${subject}-2`, subject, kind: 'transit_ride', occurred_at: `${today}T01:00:00Z`, data: { mode: 'bus' },
    });
    assert.equal(r.body.receipts[0].status, 'recorded', JSON.stringify(r.body));
    assert.equal(r.body.receipts[0].points, 0);
    await page.goto(`${BASE}/console/account`);
    assert.match(await page.textContent('#reduction-g'), /^224\b/);
    assert.match(await page.textContent('#points-balance'), /^5\b/);
  });

  await step('who touched my data lists the platform\'s writes and the console\'s reads', async () => {
    await page.goto(`${BASE}/console/accesses?lang=en`);
    const text = await page.textContent('#accesses');
    assert.match(text, /A behaviour was recorded/);
    assert.match(text, /The privacy center was opened/);
    assert.match(text, /A consent was withdrawn/);
  });

  await step('the export downloads as JSON and CSV', async () => {
    await page.goto(`${BASE}/console/export`);
    const [json] = await Promise.all([page.waitForEvent('download'), page.click('#export-json')]);
    const body = JSON.parse(readFileSync(await json.path(), 'utf8'));
    assert.ok(JSON.stringify(body).includes('clean_plate'));
    assert.ok(!JSON.stringify(body).includes(subject), 'the export names no external id');
    const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
    assert.match(readFileSync(await csv.path(), 'utf8'), /clean_plate/);
  });

  await step('erasure: a confirmation, then the receipt; the session ends', async () => {
    await page.goto(`${BASE}/console/erase?lang=en`);
    await page.click('#erase-confirm');
    await page.waitForSelector('#receipt');
    assert.match(await page.textContent('#erasure-seq'), /^\d+$/);
    await scan(page, 'erasure receipt');
    await page.screenshot({ path: join(OUT, 'erased-en.png'), fullPage: true });
    const response = await page.goto(`${BASE}/console/account`);
    assert.equal(response.status(), 401, 'the session ended with the erasure');
  });

  await step('the link no longer opens', async () => {
    const response = await page.goto(`${BASE}${openPath}`);
    assert.equal(response.status(), 404);
    await scan(page, 'link refused');
    await page.screenshot({ path: join(OUT, 'link-refused-en.png'), fullPage: true });
  });
} finally {
  await browser.close();
  console.log(`browser: ${passed} passed, ${failed} failed`);
}
