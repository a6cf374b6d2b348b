// The auditor console in a real headless Chromium: a verified checkpoint
// and inclusion proof, no serious or critical axe-core findings, the page
// working without JavaScript, screenshots in zh-CN and en; then one audit
// row altered in the database and the failure shown.
//
// Env: BASE_URL, PLATFORM_KEY, DATABASE_URL, DATA_DIR (see .ci/browser-auditor.sh).
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';

const modules = process.env.BROWSER_NODE_MODULES || path.resolve('target/browser-node/node_modules');
const require = createRequire(path.join(modules, 'noop.js'));
const { chromium } = require('playwright-core');
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const BASE = process.env.BASE_URL;
const KEY = process.env.PLATFORM_KEY;
const DB = process.env.DATABASE_URL;
const OUT = 'target/browser-output';
for (const [name, value] of Object.entries({ BASE_URL: BASE, PLATFORM_KEY: KEY, DATABASE_URL: DB })) {
  assert.ok(value, `${name} must be set`);
}
mkdirSync(OUT, { recursive: true });

async function api(method, url, body) {
  const response = await fetch(BASE + url, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${url}: ${response.status} ${text}`);
  return text;
}

// A little history, then a checkpoint (a platform may ask for one).
for (const purpose of ['accounting', 'rewards']) {
  await api('PUT', `/v1/subjects/auditor-spec/consents/${purpose}`, { notice_version: 1 });
}
const today = new Date().toISOString().slice(0, 10);
await api('POST', '/v1/events', {
  event_id: 'auditor-spec-1', subject: 'auditor-spec', kind: 'clean_plate', occurred_at: `${today}T12:00:00Z`,
});
await api('GET', '/v1/audit/checkpoint');
// A second checkpoint, so the history has a consistency proof to check.
await api('POST', '/v1/events', {
  event_id: 'auditor-spec-2', subject: 'auditor-spec', kind: 'paperless_bill', occurred_at: `${today}T12:00:00Z`, data: {},
});
await api('GET', '/v1/audit/checkpoint');

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const failures = [];

async function axe(page, label) {
  // Evaluated over the DevTools protocol, so the page's CSP stays on.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of bad) failures.push(`${label}: axe ${v.impact} ${v.id}: ${v.help} (${v.nodes.length} nodes)`);
}

for (const locale of ['en', 'zh-CN']) {
  // No JavaScript: the console needs none.
  const context = await browser.newContext({ locale, javaScriptEnabled: true, acceptDownloads: true });
  const page = await context.newPage();
  const cspViolations = [];
  page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });

  const response = await page.goto(`${BASE}/console/audit`);
  assert.equal(response.status(), 200);
  assert.equal(await page.getAttribute('html', 'lang'), locale);
  assert.match(response.headers()['content-security-policy'], /default-src 'none'/);
  assert.equal(await page.locator('#signature-result [data-check="verified"]').count(), 1, 'checkpoint verified');
  assert.equal(await page.locator('#whole-log-result [data-check="verified"]').count(), 1, 'whole log verified');
  assert.equal(await page.locator('[data-check="failed"]').count(), 0);
  assert.ok(await page.locator('#history-table [data-check="verified"]').count() >= 3, 'signatures and consistency verified');
  await axe(page, `${locale} overview`);
  await page.screenshot({ path: `${OUT}/auditor-overview-${locale}.png`, fullPage: true });

  // The lookup form, by keyboard.
  await page.focus('#seq');
  await page.keyboard.type('3');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/console\/audit\/entries\/3/);
  for (const check of ['signature', 'leaf', 'decode', 'inclusion']) {
    assert.equal(await page.locator(`#check-${check} [data-check="verified"]`).count(), 1, `${check} verified`);
  }
  await axe(page, `${locale} entry`);
  await page.screenshot({ path: `${OUT}/auditor-entry-${locale}.png`, fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const proof = path.join(OUT, `audit-proof-3-${locale}.txt`);
  await download.saveAs(proof);
  assert.match(readFileSync(proof, 'utf8'), /^carbon-ledger\/audit-proof@v1\n/);
  assert.deepEqual(cspViolations, [], 'no CSP violations');
  await context.close();
}

// The same page with JavaScript off still shows the result.
{
  const context = await browser.newContext({ locale: 'en', javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${BASE}/console/audit`);
  assert.equal(await page.locator('#signature-result [data-check="verified"]').count(), 1);
  await context.close();
}

// Alter one audit row directly in the database: entry 2, one byte.
function sql(query) {
  if (DB.startsWith('postgres')) return execFileSync('psql', ['-w', DB, '-Atqc', query], { encoding: 'utf8' }).trim();
  const file = DB.replace(/^sqlite:\/\//, '').replace(/\?.*$/, '');
  return execFileSync('sqlite3', [file, query], { encoding: 'utf8' }).trim();
}
const pg = DB.startsWith('postgres');
const hex = sql(pg ? "SELECT encode(entry, 'hex') FROM audit_log WHERE seq = 2" : 'SELECT hex(entry) FROM audit_log WHERE seq = 2');
const at = hex.length - 60;
const flipped = hex.slice(0, at) + (hex[at].toLowerCase() === '0' ? '1' : '0') + hex.slice(at + 1);
sql(pg ? `UPDATE audit_log SET entry = decode('${flipped}', 'hex') WHERE seq = 2`
  : `UPDATE audit_log SET entry = X'${flipped}' WHERE seq = 2`);
// The whole-log result is reused for up to 2 seconds.
await new Promise((resolve) => setTimeout(resolve, 2500));

for (const locale of ['en', 'zh-CN']) {
  const context = await browser.newContext({ locale });
  const page = await context.newPage();
  await page.goto(`${BASE}/console/audit`);
  assert.equal(await page.locator('#whole-log-result [data-check="failed"]').count(), 1, 'the failure is shown');
  assert.equal(await page.locator('#whole-log-result [data-check="verified"]').count(), 0);
  assert.match(await page.locator('#whole-log-result').innerText(), /audit entry 2:/);
  await axe(page, `${locale} tampered overview`);
  await page.screenshot({ path: `${OUT}/auditor-tampered-${locale}.png`, fullPage: true });
  await page.click('#whole-log-result a');
  await page.waitForURL(/\/console\/audit\/entries\/2/);
  assert.equal(await page.locator('#check-leaf [data-check="failed"]').count(), 1, 'leaf check failed');
  assert.equal(await page.locator('#check-inclusion [data-check="failed"]').count(), 1, 'inclusion failed');
  await page.screenshot({ path: `${OUT}/auditor-tampered-entry-${locale}.png`, fullPage: true });
  await context.close();
}

await browser.close();
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
console.log(`auditor console: verified, accessible, tamper shown; screenshots in ${OUT}/`);
