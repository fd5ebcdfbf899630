// The console in a real browser (Debian's Chromium through playwright-core), driven
// by tests/tests/console.rs, which starts the agent, the bots and `kgate console`.
// It talks to the Rust test in lines on stdout (`STEP name [arg]`) and stdin (`GO`):
//
//   nodes page, screenshot
//   Approvals page open           -> STEP approvals-open; the test starts a held delete
//   the held delete appears (no reload), approve -> STEP approved NAME
//   a second held delete appears, deny with a reason, the reason shows -> STEP denied NAME
//   the deep link /approvals/NAME shows the decision
//   Sessions page, the exec session: its player shows EXEC_TEXT, and again by its
//   deep link /sessions/ID -> STEP player-ok
//
// Environment: CONSOLE_URL, SCREENSHOTS (a directory), SESSION_ID, EXEC_TEXT, REASON,
// CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const url = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOTS;
const sessionId = process.env.SESSION_ID;
const execText = process.env.EXEC_TEXT;
const reason = process.env.REASON;
mkdirSync(shots, { recursive: true });

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => waiting.shift()?.(l));
const step = (...words) => console.log(`STEP ${words.join(' ')}`);
const go = () => new Promise((resolve) => waiting.push(resolve));

const profile = mkdtempSync(join(tmpdir(), 'kgate-chromium-'));
// The flags TOOLCHAIN.md verified: without the background-networking ones Chromium
// floods the closed network with refused connections.
// A fresh profile, as --user-data-dir (playwright passes it for a persistent context).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1360, height: 860 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
let failed = false;
let page;
try {
  page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('response', (r) => r.status() >= 400 && console.error(`browser: ${r.status()} for ${r.url()}`));
  page.on('console', (m) => m.type() === 'error' && console.error(`browser console: ${m.text()}`));
  const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  // Nodes: the heartbeat table, served at a deep link.
  const t0 = Date.now();
  await page.goto(`${url}/nodes`);
  // node-1 has a fresh heartbeat (the test wrote its Lease); node-2 has none.
  await page.locator('tr[data-node=node-1] .badge.ok').first().waitFor();
  await page.locator('tr[data-node=node-2]', { hasText: 'no kgate heartbeat' }).waitFor();
  console.log(`TIMING nodes-page-ms ${Date.now() - t0}`);
  await shot('nodes');

  // Approvals: open it by the nav (client-side routing), mark the document, and wait
  // for the held request to arrive over the event stream: the mark proves no reload.
  await page.click('nav a[data-nav=approvals]');
  await page.locator('main h1', { hasText: 'Approvals' }).waitFor();
  await page.locator('main table, main .empty:not(:has-text("Loading"))').first().waitFor();
  await page.evaluate(() => { window.kgateMark = 'no reload'; });
  step('approvals-open');
  const pending = page.locator('tr[data-phase=Pending]');
  await pending.first().waitFor({ timeout: 30000 });
  const first = await pending.first().getAttribute('data-name');
  if ((await page.evaluate(() => window.kgateMark)) !== 'no reload') throw new Error('the page reloaded');
  await shot('approvals-pending');
  await page.locator(`tr[data-name="${first}"] button.approve`).click();
  await page.locator(`tr[data-name="${first}"][data-phase=Approved] .decided-by`).waitFor({ timeout: 15000 });
  step('approved', first, JSON.stringify(await page.locator(`tr[data-name="${first}"] .decided-by`).textContent()));
  await go();

  // The second held request: denied with a reason, which the row shows.
  const second = page.locator(`tr[data-phase=Pending]:not([data-name="${first}"])`);
  await second.first().waitFor({ timeout: 30000 });
  const name = await second.first().getAttribute('data-name');
  await page.locator(`tr[data-name="${name}"] input.reason`).fill(reason);
  await page.locator(`tr[data-name="${name}"] button.deny`).click();
  const denied = page.locator(`tr[data-name="${name}"][data-phase=Denied]`);
  await denied.locator('.reason-text', { hasText: reason }).waitFor({ timeout: 15000 });
  if ((await page.evaluate(() => window.kgateMark)) !== 'no reload') throw new Error('the page reloaded');
  await shot('approvals');
  step('denied', name);
  await go();

  // A deep link to the decided approval.
  await page.goto(`${url}/approvals/${name}`);
  await page.locator('.facts dd', { hasText: reason }).waitFor({ timeout: 15000 });

  // Sessions, then the exec session: its player shows what the command printed.
  const t1 = Date.now();
  await page.goto(`${url}/sessions`);
  await page.locator(`tr[data-session="${sessionId}"]`).waitFor({ timeout: 15000 });
  console.log(`TIMING sessions-page-ms ${Date.now() - t1}`);
  await shot('sessions');
  await page.locator(`tr[data-session="${sessionId}"] a`).click();
  await page.locator('.ap-term-text', { hasText: execText }).first().waitFor({ timeout: 20000 });
  await page.locator('tr[data-audit]').first().waitFor();
  await shot('session');
  // The same session by its deep link, loaded afresh.
  await page.goto(`${url}/sessions/${sessionId}`);
  await page.locator('.ap-term-text', { hasText: execText }).first().waitFor({ timeout: 20000 });
  step('player-ok');

  if (pageErrors.length) throw new Error(`errors in the page: ${pageErrors.join('; ')}`);
} catch (e) {
  failed = true;
  console.error(`FAILED ${e.stack || e}`);
  await page?.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  lines.close();
}
process.exit(failed ? 1 : 0);
