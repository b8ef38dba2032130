// The viewer page in headless Debian Chromium, against the deployed actions:
// open a staged CT series, scroll it, window it by dragging and by a preset,
// zoom; then a job's SEG over its source series (overlay inside the
// segmented box, none outside, per-segment visibility and opacity) and its
// SR table. Prints one JSON line per step ({step, ok, ...}); driven by
// test_viewer.py, which asserts on them. Pixel values are read from the
// image layer's canvas (dwv draws into a plain 2D canvas).
//
// env: RC_UI, RC_USER, RC_PASSWORD,
//      RC_SERIES (a staged CT series UID), RC_JOB (a job with a SEG and an SR of it),
//      RC_PROBE_SOP (a source image the SEG marks), RC_INSIDE / RC_OUTSIDE
//      ("row,col" on it: a voxel of segment 1, a voxel of no segment), RC_SHOTS
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
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const page = await context.newPage();
const external = [];
page.on("request", (r) => { const u = new URL(r.url()); if (!["127.0.0.1", "localhost"].includes(u.hostname) && u.protocol.startsWith("http")) external.push(r.url()); });
const consoleErrors = [];
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    emit({ step: name, ok: true, ms: Date.now() - t0, ...detail });
    await page.screenshot({ path: `${SHOTS}/viewer-${name}.png` });
    return true;
  } catch (err) {
    emit({ step: name, ok: false, ms: Date.now() - t0, error: String(err && err.stack || err), console: consoleErrors.slice(-5) });
    await page.screenshot({ path: `${SHOTS}/viewer-${name}-failed.png` }).catch(() => {});
    return false;
  }
}

// What the page shows at image voxel (row, col) of the current slice: the
// image and SEG canvases' RGBA there (window.rcViewer.pixelAt, dwv's own
// plane -> display mapping).
const probe = (row, col) => page.evaluate(([row, col]) => window.rcViewer.pixelAt(row, col), [row, col]);

const centre = async () => {
  const box = await page.locator("#vw-stage").boundingBox();
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
};

await step("login", async () => {
  await page.goto(`${env.RC_UI}/login?next=search`);
  await page.fill("#username", env.RC_USER);
  await page.fill("#password", env.RC_PASSWORD);
  await Promise.all([page.waitForURL(/\/search/), page.click("#login-form button")]);
  return {};
});

const ok = await step("open-series", async () => {
  const t0 = Date.now();
  await page.goto(`${env.RC_UI}/viewer?series=${encodeURIComponent(env.RC_SERIES)}`);
  await page.waitForFunction(() => window.rcViewer && (window.rcViewer.loaded || window.rcViewer.error), null, { timeout: 60000 });
  const s = await page.evaluate(() => ({ error: window.rcViewer.error, slices: window.rcViewer.slices,
    firstImageMs: window.rcViewer.firstImageMs, loadedMs: window.rcViewer.loadedMs, title: document.querySelector("#vw-title").textContent,
    wl: window.rcViewer.windowLevel(), thumbs: document.querySelectorAll("#vw-thumbs button").length,
    identity: document.querySelector("#vw-identity .identity")?.innerText || "", doc_title: document.title }));
  if (s.error) throw new Error(s.error);
  await page.waitForFunction(() => document.querySelectorAll("#vw-thumbs button").length > 0, null, { timeout: 15000 });
  return { ...s, thumbs: await page.locator("#vw-thumbs button").count(), wall_ms: Date.now() - t0 };
});

if (ok) {
  await step("scroll", async () => {
    await page.focus("#vw-stage");
    await page.evaluate(() => window.rcViewer.setIndex(0));
    const start = await page.evaluate(() => window.rcViewer.index());
    const { x, y } = await centre();
    await page.mouse.move(x, y);
    await page.mouse.wheel(0, 100);
    await page.mouse.wheel(0, 100);
    await page.waitForFunction((s) => window.rcViewer.index() === s + 2, start, { timeout: 5000 });
    const afterWheel = await page.evaluate(() => window.rcViewer.index());
    await page.keyboard.press("ArrowDown");
    const afterKey = await page.evaluate(() => window.rcViewer.index());
    await page.locator("#vw-slice").fill("7");
    const afterSlider = await page.evaluate(() => window.rcViewer.index());
    const label = await page.textContent("#vw-slice-label");
    return { start, afterWheel, afterKey, afterSlider, label };
  });

  await step("window-level", async () => {
    // A soft-tissue voxel of the phantom, mid-image.
    const row = Number(env.RC_PROBE_ROW || 64), col = Number(env.RC_PROBE_COL || 64);
    const before = await probe(row, col);
    const wlBefore = await page.evaluate(() => window.rcViewer.windowLevel());
    const { x, y } = await centre();
    await page.mouse.move(x, y);
    await page.mouse.down();
    await page.mouse.move(x + 40, y + 60, { steps: 5 });
    await page.mouse.up();
    const wlDrag = await page.evaluate(() => window.rcViewer.windowLevel());
    const afterDrag = await probe(row, col);
    await page.click('#vw-presets button[data-preset="lung"]');
    const wlLung = await page.evaluate(() => window.rcViewer.windowLevel());
    const afterLung = await probe(row, col);
    await page.click('#vw-presets button[data-preset="bone"]');
    const wlBone = await page.evaluate(() => window.rcViewer.windowLevel());
    const afterBone = await probe(row, col);
    return { before, wlBefore, wlDrag, afterDrag, wlLung, afterLung, wlBone, afterBone,
             pressed: await page.getAttribute('#vw-presets button[data-preset="bone"]', "aria-pressed") };
  });

  await step("zoom-pan", async () => {
    const scale = () => page.evaluate(() => window.rcViewer.app.getAddedScale().x);
    const before = await scale();
    await page.focus("#vw-stage");
    await page.keyboard.press("+");
    await page.keyboard.press("+");
    const zoomed = await scale();
    const offset = () => page.evaluate(() => window.rcViewer.app.getOffset());
    const o1 = await offset();
    const { x, y } = await centre();
    await page.keyboard.down("Shift");
    await page.mouse.move(x, y); await page.mouse.down(); await page.mouse.move(x + 50, y + 30, { steps: 3 }); await page.mouse.up();
    await page.keyboard.up("Shift");
    const o2 = await offset();
    await page.click("#vw-reset");
    return { before, zoomed, panned: o1.x !== o2.x || o1.y !== o2.y, after_reset: await scale() };
  });
}

if (env.RC_JOB) {
  await step("seg-overlay", async () => {
    const [ir, ic] = env.RC_INSIDE.split(",").map(Number), [or, oc] = env.RC_OUTSIDE.split(",").map(Number);
    await page.goto(`${env.RC_UI}/viewer?job=${encodeURIComponent(env.RC_JOB)}`);
    await page.waitForFunction(() => window.rcViewer && (window.rcViewer.segLoaded || window.rcViewer.error), null, { timeout: 60000 });
    const error = await page.evaluate(() => window.rcViewer.error);
    if (error) throw new Error(error);
    const k = await page.evaluate((sop) => window.rcViewer.indexOfImage(sop), env.RC_PROBE_SOP);
    if (k < 0) throw new Error(`the source image ${env.RC_PROBE_SOP} is not in the series shown`);
    await page.evaluate((k) => window.rcViewer.setIndex(k), k);
    await page.waitForTimeout(100);
    const inside = await probe(ir, ic);
    const outside = await probe(or, oc);
    await page.uncheck('#vw-seg-list input[data-segment="1"]');
    await page.waitForTimeout(100);
    const hidden = await probe(ir, ic);
    await page.check('#vw-seg-list input[data-segment="1"]');
    await page.locator("#vw-seg-opacity").fill("100");
    await page.waitForTimeout(100);
    const opaque = await probe(ir, ic);
    const opacity = await page.evaluate(() => window.rcViewer.segOpacity());
    return { index: k, inside, outside, hidden, opaque, opacity, segments: await page.evaluate(() => window.rcViewer.segments),
             identity: await page.$eval("#vw-identity .identity", (e) => e.innerText) };
  });

  await step("sr-table", async () => {
    const rows = await page.$$eval("#vw-sr-table tbody tr", (trs) => trs.map((tr) => Array.from(tr.cells, (c) => c.textContent)));
    return { rows, visible: await page.isVisible("#vw-sr") };
  });
}

emit({ step: "summary", external_requests: external, console_errors: consoleErrors });
await browser.close();
