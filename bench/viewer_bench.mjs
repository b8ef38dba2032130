// Browser half of bench/viewer_bench.py: the viewer (dwv on original DICOM)
// and the Results page's PNG gallery, timed in one headless Chromium.
// Prints one JSON line of figures. env: RC_UI, RC_USER, RC_PASSWORD,
// RC_SERIES (staged CT), RC_JOB (dcm2png's job on it), RC_RUNS, RC_SCROLL.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "../tests/e2e/browser/node_modules/playwright-core/index.mjs";

const env = process.env;
const RUNS = Number(env.RC_RUNS || 3), SCROLL = Number(env.RC_SCROLL || 100);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
const r1 = (x) => Math.round(x * 10) / 10;

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"];
// Each scenario gets a browser profile of its own on disk (a persistent context), as a clinician's
// browser has: an HTTP cache on disk and V8's code cache, which an incognito context keeps in memory
// or not at all.
let profiles = 0;
async function browserWithProfile() {
  const dir = await mkdtemp(join(env.HOME || tmpdir(), `viewer-bench-profile-${profiles++}-`));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: env.CHROMIUM || "/usr/bin/chromium", args: ARGS, viewport: { width: 1366, height: 900 } });
  const page = context.pages()[0] || await context.newPage();
  return { context, page, close: async () => { await context.close(); await rm(dir, { recursive: true, force: true }); } };
}
async function login(page, next = "search") {
  await page.goto(`${env.RC_UI}/login?next=${next}`);
  await page.fill("#username", env.RC_USER);
  await page.fill("#password", env.RC_PASSWORD);
  await Promise.all([page.waitForURL(new RegExp(`/${next}`)), page.click("#login-form button")]);
}

/* Open the viewer on the series; the time to its first image and where it went. */
async function openViewer(page) {
  await page.goto(`${env.RC_UI}/viewer?series=${encodeURIComponent(env.RC_SERIES)}`);
  await page.waitForFunction(() => window.rcViewer && window.rcViewer.firstImageMs !== null, null, { timeout: 60000 });
  const first = await page.evaluate(() => {
    // Where the time to the first image goes, from the browser's resource timing (ms from navigation).
    const v = window.rcViewer, nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource");
    const end = (pred) => { const r = res.filter(pred).map((e) => e.responseEnd); return r.length ? Math.max(...r) : null; };
    // Every request the page made for the action's answer: a busy answer (429/503 from OpenWhisk's edge,
    // no activation) is asked again after a backoff (app.js fetchRetrying), so the answer the page
    // uses is the last one's.
    const calls = res.filter((e) => e.name.includes("/viewer/series/"));
    const call = calls[0], answered = calls[calls.length - 1];
    const s3 = res.filter((e) => e.name.includes("X-Amz-Signature"));
    // dwv's module files (the entry and its chunks): fetched over the network or read from the cache
    const dwv = res.filter((e) => e.name.includes("/vendor/dwv/") && !e.name.includes("/assets/"));
    return { fromOpen: v.firstImageMs, fromNavigation: v.firstImageMs + v.opened, phases: {
      html: nav.responseEnd, dwv_module: end((e) => e.name.includes("/vendor/dwv/")), opened: v.opened,
      dwv_ready: v.dwvReadyMs === undefined ? null : v.dwvReadyMs + v.opened,
      answer_in_page: v.answeredMs == null ? null : v.answeredMs + v.opened,
      load_called: v.loadCalledMs == null ? null : v.loadCalledMs + v.opened,
      load_sent: v.loadSentMs == null ? null : v.loadSentMs + v.opened,
      viewer_action_start: call ? call.startTime : null, viewer_action: call ? call.responseEnd - call.startTime : null,
      viewer_action_end: answered ? answered.responseEnd : null,
      first_instance_start: s3.length ? Math.min(...s3.map((e) => e.startTime)) : null,
      first_instance_end: s3.length ? Math.min(...s3.map((e) => e.responseEnd)) : null,
      first_image: v.firstImageMs + v.opened },
      action_requests: calls.length, action_statuses: calls.map((e) => e.responseStatus ?? null),
      dwv_files: dwv.length, dwv_bytes_fetched: dwv.reduce((n, e) => n + e.transferSize, 0),
      dwv_from_cache: dwv.length > 0 && dwv.every((e) => e.transferSize === 0) };
  });
  await page.waitForFunction(() => window.rcViewer.loaded || window.rcViewer.error, null, { timeout: 600000 });
  const state = await page.evaluate(() => ({ loadedMs: window.rcViewer.loadedMs + window.rcViewer.opened, slices: window.rcViewer.slices, error: window.rcViewer.error }));
  if (state.error) throw new Error(state.error);
  return { ...first, ...state };
}

// ---- the viewer -----------------------------------------------------------------------
// cold: a browser with an empty cache (emptied after logging in, so nothing a page fetched ahead
//   is there) opens the viewer: dwv's module is fetched on the way to the first image.
// after_search: a browser that never opened the viewer logs in and spends IDLE_MS on the Search page
//   first, then opens it (what the pages fetched ahead counts: the usual way in is search → pull → open).
// warm: a browser that has opened the viewer before opens it again (its module in the browser's cache).
const IDLE_MS = Number(env.RC_IDLE_MS || 3000);
const scenarios = { cold: [], after_search: [], warm: [] };
for (let run = 0; run < RUNS; run++) {
  for (const name of ["cold", "after_search"]) {
    const b = await browserWithProfile();
    await login(b.page);
    if (name === "after_search") await b.page.waitForTimeout(IDLE_MS);
    else {  // off the Search page first, so that nothing it fetches at idle lands after the emptying
      await b.page.goto("about:blank");
      await (await b.context.newCDPSession(b.page)).send("Network.clearBrowserCache");
    }
    scenarios[name].push(await openViewer(b.page));
    await b.close();
  }
}
const { page, close } = await browserWithProfile();
await login(page);
await openViewer(page);                      // the visit that fills the cache, not counted
for (let run = 0; run < RUNS; run++) scenarios.warm.push(await openViewer(page));
const viewerRuns = scenarios.warm;
// Scroll with the lung window: every draw maps raw HU through the window.
await page.click('#vw-presets button[data-preset="lung"]');
const viewerScroll = await page.evaluate(async (n) => {
  const v = window.rcViewer;
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  v.setIndex(0); await frame(); await frame();
  const draws = [];
  const t0 = performance.now();
  for (let k = 1; k <= n; k++) {
    const s = performance.now();
    v.setIndex(k);            // dwv draws the slice synchronously
    draws.push(performance.now() - s);
    await frame();            // and it is on screen at the next frame
  }
  const total = performance.now() - t0;
  return { fps: n / (total / 1000), draws, index: v.index(), wl: v.windowLevel() };
}, SCROLL);

// ---- the PNG gallery (skipped without RC_JOB) ----------------------------------------
let gallery = null;
if (env.RC_JOB) {
  const galleryRuns = [];
  for (let run = 0; run < RUNS; run++) {
    await page.goto(`${env.RC_UI}/view?job=${encodeURIComponent(env.RC_JOB)}`);
    const t = await page.waitForFunction(() => {
      const img = [...document.querySelectorAll("#thumbs img")].find((i) => i.complete && i.naturalWidth > 0);
      return img ? performance.now() : null;
    }, null, { timeout: 120000, polling: "raf" });
    galleryRuns.push({ fromNavigation: await t.jsonValue() });
  }
  // Open the slice viewer on the first slice, set a window preset, then step its slider.
  await page.click("#thumbs button.slice");
  await page.waitForFunction(() => document.querySelector("#canvas").dataset.loaded, null, { timeout: 30000 });
  await page.click('#presets button[data-window="128,128"]');
  const galleryScroll = await page.evaluate(async (n) => {
    const slider = document.querySelector("#slice"), canvas = document.querySelector("#canvas");
    const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
    const steps = [];
    const t0 = performance.now();
    const count = Math.min(n, Number(slider.max));
    for (let k = 1; k <= count; k++) {
      const before = canvas.dataset.loaded;
      const s = performance.now();
      slider.value = String(k);
      slider.dispatchEvent(new Event("input"));
      while (canvas.dataset.loaded === before) await frame();   // drawn once its PNG has arrived
      steps.push(performance.now() - s);
    }
    const total = performance.now() - t0;
    return { fps: count / (total / 1000), steps, scrolled: count };
  }, SCROLL);
  gallery = {
    runs: galleryRuns.length,
    first_image_from_navigation_ms: r1(median(galleryRuns.map((r) => r.fromNavigation))),
    scroll: { slices: galleryScroll.scrolled, fps: r1(galleryScroll.fps), step_median_ms: r1(median(galleryScroll.steps)),
              step_p95_ms: r1(pct(galleryScroll.steps, 0.95)) },
  };
}
await close();
function summary(runs) {
  return {
    runs: runs.length,
    first_image_from_navigation_ms: r1(median(runs.map((r) => r.fromNavigation))),
    first_image_from_open_ms: r1(median(runs.map((r) => r.fromOpen))),
    // medians of each phase's time from navigation start (null: not seen)
    first_image_phases_ms: Object.fromEntries(Object.keys(runs[0].phases).map((k) => {
      const xs = runs.map((r) => r.phases[k]).filter((x) => x !== null);
      return [k, xs.length ? r1(median(xs)) : null];
    })),
    dwv_module: { files: runs[0].dwv_files, bytes_fetched_median: median(runs.map((r) => r.dwv_bytes_fetched)),
                  from_cache: runs.filter((r) => r.dwv_from_cache).length + "/" + runs.length },
    // the viewer action asked again after a busy answer (429/503), in any of the runs: [requests, statuses] each
    action_retried: runs.filter((r) => r.action_requests > 1).map((r) => [r.action_requests, r.action_statuses]),
    series_loaded_from_navigation_ms: r1(median(runs.map((r) => r.loadedMs))),
  };
}
const viewer = {
  slices: viewerRuns[0].slices,
  ...summary(scenarios.warm),
  cold: summary(scenarios.cold), after_search: summary(scenarios.after_search),
  scroll: { slices: SCROLL, fps: r1(viewerScroll.fps), draw_median_ms: r1(median(viewerScroll.draws)),
            draw_p95_ms: r1(pct(viewerScroll.draws, 0.95)), window: viewerScroll.wl },
};
process.stdout.write(JSON.stringify({ viewer, gallery }) + "\n");
