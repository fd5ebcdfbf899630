// Page load of the console's Sessions page (first page of the newest sessions) in
// Chromium, for tests/tests/console.rs's measurement with many sessions. Prints
// `TIMING name ms` lines. Environment: CONSOLE_URL, CHROMIUM.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const url = process.env.CONSOLE_URL;
const profile = mkdtempSync(join(tmpdir(), 'kgate-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const page = await browser.newPage();
  for (const run of ['cold', 'warm', 'warm']) {
    const t0 = Date.now();
    await page.goto(`${url}/sessions`);
    await page.locator('tr[data-session]').first().waitFor({ timeout: 120000 });
    const rows = await page.locator('tr[data-session]').count();
    const pager = await page.locator('.pager span').textContent();
    console.log(`TIMING sessions-page-${run}-ms ${Date.now() - t0} (${rows} rows shown, ${pager})`);
  }
  const t1 = Date.now();
  await page.goto(`${url}/sessions?user=*bot-7*`);
  await page.locator('tr[data-session]').first().waitFor({ timeout: 120000 });
  console.log(`TIMING sessions-filtered-ms ${Date.now() - t1} (${await page.locator('.pager span').textContent()})`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
