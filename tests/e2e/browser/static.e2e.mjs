// The UI built for a static host (python -m radcloud.ui.pages out/ --api-base ...),
// served from another origin than the web actions: without a token → login
// page; log in; search by MRN across origins (CORS, Bearer token). One JSON
// line per step, like ui.e2e.mjs. env: RC_STATIC, RC_USER, RC_PASSWORD, RC_MRN, RC_SHOTS
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = process.env;
const SHOTS = env.RC_SHOTS || "artifacts/screenshots";
mkdirSync(SHOTS, { recursive: true });
const emit = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
});
const page = await (await browser.newContext({ viewport: { width: 1366, height: 860 } })).newPage();
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
let ok = true;
try {
  await page.goto(`${env.RC_STATIC}/search.html`);
  await page.waitForSelector("#login-form", { timeout: 10000 });
  const redirected = page.url();
  await page.fill("#username", env.RC_USER);
  await page.fill("#password", env.RC_PASSWORD);
  await page.click("#login-form button[type=submit]");
  await page.waitForURL(/search\.html/, { timeout: 15000 });
  await page.fill("#mrn", env.RC_MRN || "RC100002");
  await page.click("#search-btn");
  await page.waitForSelector("#results tr.study", { timeout: 20000 });
  const studies = await page.$$eval("#results tr.study", (t) => t.length);
  await page.screenshot({ path: `${SHOTS}/static-search.png`, fullPage: true });
  emit({ step: "static-site", ok: true, redirected, studies, errors });
} catch (err) {
  ok = false;
  try { await page.screenshot({ path: `${SHOTS}/static-search.png`, fullPage: true }); } catch (e) { /* gone */ }
  emit({ step: "static-site", ok: false, error: String(err && err.message || err).slice(0, 800), errors });
}
await browser.close();
process.exit(ok ? 0 : 1);
