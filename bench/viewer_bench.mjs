// Browser half of bench/viewer_bench.py: the viewer (dwv on original DICOM)
// and the Results page's PNG gallery, timed in one headless Chromium.
// Prints one JSON line of figures. env: RC_UI, RC_USER, RC_PASSWORD,
// RC_SERIES (staged CT), RC_JOB (dcm2png's job on it), RC_RUNS, RC_SCROLL.
import { chromium } from "../tests/e2e/browser/node_modules/playwright-core/index.mjs";

const env = process.env;
const RUNS = Number(env.RC_RUNS || 3), SCROLL = Number(env.RC_SCROLL || 100);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
const r1 = (x) => Math.round(x * 10) / 10;

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1366, height: 900 } });
const page = await context.newPage();
await page.goto(`${env.RC_UI}/login?next=search`);
await page.fill("#username", env.RC_USER);
await page.fill("#password", env.RC_PASSWORD);
await Promise.all([page.waitForURL(/\/search/), page.click("#login-form button")]);

// ---- the viewer -----------------------------------------------------------------------
const viewerRuns = [];
for (let run = 0; run < RUNS; run++) {
  await page.goto(`${env.RC_UI}/viewer?series=${encodeURIComponent(env.RC_SERIES)}`);
  await page.waitForFunction(() => window.rcViewer && window.rcViewer.firstImageMs !== null, null, { timeout: 60000 });
  const first = await page.evaluate(() => {
    // Where the time to the first image goes, from the browser's resource timing (ms from navigation).
    const v = window.rcViewer, nav = performance.getEntriesByType("navigation")[0];
    const res = performance.getEntriesByType("resource");
    const end = (pred) => { const r = res.filter(pred).map((e) => e.responseEnd); return r.length ? Math.min(...r) : null; };
    const call = res.find((e) => e.name.includes("/viewer/series/"));
    const s3 = res.filter((e) => e.name.includes("X-Amz-Signature"));
    return { fromOpen: v.firstImageMs, fromNavigation: v.firstImageMs + v.opened, phases: {
      html: nav.responseEnd, dwv_module: end((e) => e.name.includes("/vendor/dwv/dwv.js")), opened: v.opened,
      viewer_action_start: call ? call.startTime : null, viewer_action: call ? call.responseEnd - call.startTime : null,
      first_instance_start: s3.length ? Math.min(...s3.map((e) => e.startTime)) : null,
      first_instance_end: s3.length ? Math.min(...s3.map((e) => e.responseEnd)) : null,
      first_image: v.firstImageMs + v.opened } };
  });
  await page.waitForFunction(() => window.rcViewer.loaded || window.rcViewer.error, null, { timeout: 600000 });
  const state = await page.evaluate(() => ({ loadedMs: window.rcViewer.loadedMs + window.rcViewer.opened, slices: window.rcViewer.slices, error: window.rcViewer.error }));
  if (state.error) throw new Error(state.error);
  viewerRuns.push({ ...first, ...state });
}
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

// ---- the PNG gallery --------------------------------------------------------------------
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

await browser.close();
const viewer = {
  runs: viewerRuns.length, slices: viewerRuns[0].slices,
  first_image_from_navigation_ms: r1(median(viewerRuns.map((r) => r.fromNavigation))),
  first_image_from_open_ms: r1(median(viewerRuns.map((r) => r.fromOpen))),
  // medians of each phase's time from navigation start (null: not seen)
  first_image_phases_ms: Object.fromEntries(Object.keys(viewerRuns[0].phases).map((k) => {
    const xs = viewerRuns.map((r) => r.phases[k]).filter((x) => x !== null);
    return [k, xs.length ? r1(median(xs)) : null];
  })),
  series_loaded_from_navigation_ms: r1(median(viewerRuns.map((r) => r.loadedMs))),
  scroll: { slices: SCROLL, fps: r1(viewerScroll.fps), draw_median_ms: r1(median(viewerScroll.draws)),
            draw_p95_ms: r1(pct(viewerScroll.draws, 0.95)), window: viewerScroll.wl },
};
const gallery = {
  runs: galleryRuns.length,
  first_image_from_navigation_ms: r1(median(galleryRuns.map((r) => r.fromNavigation))),
  scroll: { slices: galleryScroll.scrolled, fps: r1(galleryScroll.fps), step_median_ms: r1(median(galleryScroll.steps)),
            step_p95_ms: r1(pct(galleryScroll.steps, 0.95)) },
};
process.stdout.write(JSON.stringify({ viewer, gallery }) + "\n");
