// What every browser script here shares (ui.e2e.mjs, viewer.e2e.mjs, static.e2e.mjs): Debian's
// headless Chromium through playwright-core, a record of requests leaving 127.0.0.1 and of console
// errors, steps that print one JSON line each ({step, ok, ms, ...}) with a screenshot, and the login
// form. The Python side (browser.py) runs a script and reads those lines back.
//
// env: CHROMIUM (default /usr/bin/chromium), RC_SHOTS (screenshot folder)
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { text } from "node:stream/consumers";

export const env = process.env;
export const SHOTS = env.RC_SHOTS || "artifacts/screenshots";
mkdirSync(SHOTS, { recursive: true });
export const FINAL = ["succeeded", "failed", "partial", "cancelled"];
// A script's summary also carries the viewer's own notices (below), whatever script it is.
export const emit = (o) => process.stdout.write(JSON.stringify(o.step === "summary" ? { ...o, viewer_notices: viewerNotices } : o) + "\n");

// Requests to anything but this machine, and console errors, of every page watched.
export const external = [];
export const consoleErrors = [];
export const pageErrors = [];   // uncaught exceptions only (also in consoleErrors)
// The viewer's warnings ("radcloud viewer: skipped drawing an empty canvas (<stack>)", webui/static/viewer.js):
// contained, so not an error, but each names where a draw came from that the viewer's source has not found.
export const viewerNotices = [];

export function watch(page, label = "") {
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (!["127.0.0.1", "localhost"].includes(u.hostname) && u.protocol.startsWith("http")) external.push(r.url());
  });
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(label + m.text());
    // A script's own page.evaluate (its stack runs through Playwright's UtilityScript) is the test's doing.
    else if (m.type() === "warning" && m.text().startsWith("radcloud viewer:") && !m.text().includes("UtilityScript.evaluate"))
      viewerNotices.push(label + m.text());
  });
  page.on("pageerror", (e) => {
    // With where it was thrown (the stack's first frames), for an error seen once in many runs.
    const where = e && e.stack ? ` at ${e.stack.split("\n").slice(1, 5).map((l) => l.trim()).join(" < ")}` : "";
    consoleErrors.push(label + String(e) + where);
    pageErrors.push(label + String(e) + where);
  });
  return page;
}

export const CHROMIUM = {
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"],
};

// The browser: the tier's shared Chromium when RC_BROWSER_WS names one (browser-server.mjs, started
// once per pytest session by conftest.py: a launch is seconds of CPU), else one of our own. Each
// script works in contexts of its own (no cookie, storage or cache shared); close() on a connected
// browser closes those and disconnects, the shared Chromium stays up for the next script.
export async function launch(contextOptions = {}) {
  const browser = env.RC_BROWSER_WS ? await chromium.connect(env.RC_BROWSER_WS, { timeout: 30000 })
    : await chromium.launch(CHROMIUM);
  const context = await browser.newContext({ viewport: { width: 1366, height: 860 }, ...contextOptions });
  const page = watch(await context.newPage());
  return { browser, context, page };
}

// A download's content as text. Streamed, not download.path(): a browser connected to
// (the shared Chromium) keeps its downloads on its own side.
export async function downloadText(download) {
  return text(await download.createReadStream());
}

// A step's screenshot is its record, not its check (what fn asserted has passed by then): one that
// does not come is said in the step's line (screenshot_error) and the step stands. Chromium's capture
// can wait on a frame that a loaded machine does not draw for 30 s (a fresh-clone run: "taking page
// screenshot … fonts loaded", then Playwright's timeout; microsoft/playwright#9757 is one such hang).
async function capture(page, path, fullPage) {
  try {
    await page.screenshot({ path, fullPage, timeout: 15000 });
    return { screenshot: path };
  } catch (err) {
    return { screenshot: null, screenshot_error: String(err && err.message || err).split("\n")[0].slice(0, 200) };
  }
}

// step(name, fn): runs fn, prints {step: name, ok, ms, screenshot, ...what fn returned} or the error,
// and saves a screenshot named by shot(name, n) (n counts the steps). Returns whether it passed.
export function stepper(page, { shot = (name) => `${SHOTS}/${name}.png`, fullPage = false } = {}) {
  const step = async (name, fn) => {
    const t0 = Date.now();
    step.n += 1;
    const path = shot(name, step.n);
    let detail;
    try {
      detail = (await fn()) || {};
    } catch (err) {
      const ms = Date.now() - t0;
      const snap = await capture(page, path.replace(/\.png$/, "-failed.png"), fullPage);  // the page may be gone
      emit({ step: name, ok: false, ms, ...snap, error: String(err && err.message || err).slice(0, 800),
             console: consoleErrors.slice(-5) });
      return false;
    }
    const ms = Date.now() - t0;
    emit({ step: name, ok: true, ms, ...(await capture(page, path, fullPage)), ...detail });
    return true;
  };
  step.n = 0;
  return step;
}

// The login form, wherever the app sent the browser; waits for the page it goes on to.
export async function login(page, user, password, { then = null } = {}) {
  await page.waitForSelector("#login-form", { timeout: 15000 });
  await page.fill("#username", user);
  await page.fill("#password", password);
  await Promise.all([then ? page.waitForURL(then, { timeout: 15000 }) : Promise.resolve(),
                     page.click("#login-form button[type=submit]")]);
}
