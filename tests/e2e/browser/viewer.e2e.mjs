// The walk a radiologist takes, in headless Debian Chromium against the deployed actions, in two
// phases (RC_PHASE) so the test can read what the first one made before the second:
//
// walk:    log in → search the PACS by MRN → pull the CT study → open the series from the Pull
//          page, scroll it, window it by dragging and by presets, zoom → run lung-seg on the pull
//          with "Send results back to the PACS" → the job succeeds; deidentify on the same pull →
//          Results → Open in the viewer: the job's own DICOM images (a result series);
// results: the job's SEG over its source series (overlay inside a segment, none outside,
//          per-segment visibility and opacity) and its SR table → search and pull the same study
//          again, which now holds the pushed SEG and SR → open the SEG from the Pull page: the
//          PACS copy over the source series, and the SR's table.
//
// Prints one JSON line per step ({step, ok, ...}, harness.mjs); driven by test_viewer.py, which
// asserts on them. Pixel values are read from the layers' canvases (dwv draws into 2D canvases).
//
// env: RC_UI, RC_USER, RC_PASSWORD, RC_SHOTS, RC_PHASE,
//      walk:    RC_MRN (the CT's patient in the PACS)
//      results: RC_MRN, RC_JOB (the lung-seg job), RC_SEG_SERIES (the SEG series the job pushed),
//               RC_PROBE_SOP (a source image the SEG marks), RC_INSIDE / RC_OUTSIDE ("row,col" on
//               it: a voxel of segment 1, a voxel of no segment)
import { env, SHOTS, FINAL, emit, external, consoleErrors, launch, login, stepper } from "./harness.mjs";

const UI = env.RC_UI;
const { browser, page } = await launch({ viewport: { width: 1366, height: 900 } });
const step = stepper(page, { shot: (name) => `${SHOTS}/viewer-${name}.png` });

// What the page shows at image voxel (row, col) of the current slice: the
// image and SEG canvases' RGBA there (window.rcViewer.pixelAt, dwv's own
// plane -> display mapping).
const probe = (row, col) => page.evaluate(([row, col]) => window.rcViewer.pixelAt(row, col), [row, col]);

const centre = async () => {
  const box = await page.locator("#vw-stage").boundingBox();
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
};

// Search the PACS for the MRN and pull its (only) study; resolves when every series is staged.
async function searchAndPull(withResults = false) {
  await page.goto(`${UI}/search`);
  await page.fill("#mrn", env.RC_MRN);
  await page.click("#search-btn");
  await page.waitForSelector("#results tr.study input[type=checkbox]", { timeout: 20000 });
  await page.check("#results tr.study input[type=checkbox] >> nth=0");
  if (withResults) {
    // radcloud's own results in the PACS (the pushed SEG and SR) do not come with the study: tick them.
    await page.click("#results tr.study td:nth-child(2) button");
    await page.waitForSelector("#results tr.series.derived input", { timeout: 20000 });
    const boxes = page.locator("#results tr.series.derived input");   // each tick re-renders the rows
    for (let i = 0, n = await boxes.count(); i < n; i++) await boxes.nth(i).check();
  }
  await page.click("#pull-btn");
  await page.waitForSelector("#start-pull:not([disabled])", { timeout: 10000 });
  await page.click("#start-pull");
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll(".pull-item .row[data-series]")];
    return rows.length && rows.every((r) => r.dataset.state === "succeeded");
  }, null, { timeout: 120000, polling: 250 });
  return page.$$eval(".pull-item .row[data-series]", (rows) => rows.map((r) => r.dataset.series));
}

// Wait for the viewer page to have loaded its images (or failed); its state, or throws its error.
async function viewerLoaded(what = "loaded") {
  await page.waitForFunction((w) => window.rcViewer && (window.rcViewer[w] || window.rcViewer.error), what, { timeout: 60000 });
  const error = await page.evaluate(() => window.rcViewer.error);
  if (error) throw new Error(error);
}

// The SEG layer over probe voxels of the source image RC_PROBE_SOP, and its two controls.
async function overlay() {
  const [ir, ic] = env.RC_INSIDE.split(",").map(Number), [or, oc] = env.RC_OUTSIDE.split(",").map(Number);
  await viewerLoaded("segLoaded");
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
  return { index: k, inside, outside, hidden, opaque, opacity, title: await page.textContent("#vw-title"),
           segments: await page.evaluate(() => window.rcViewer.segments),
           identity: await page.$eval("#vw-identity .identity", (e) => e.innerText) };
}

const srTable = async () => ({
  rows: await page.$$eval("#vw-sr-table tbody tr", (trs) => trs.map((tr) => Array.from(tr.cells, (c) => c.textContent))),
  visible: await page.isVisible("#vw-sr") });

await step("login", async () => {
  await page.goto(`${UI}/login?next=search`);
  await login(page, env.RC_USER, env.RC_PASSWORD, { then: /\/search/ });
  return {};
});

if (env.RC_PHASE === "walk") await walk();
else await results();
emit({ step: "summary", external_requests: external, console_errors: consoleErrors });
await browser.close();

async function walk() {
  if (!await step("search-and-pull", async () => ({ series: await searchAndPull() }))) return;

  const ok = await step("open-series", async () => {
    const t0 = Date.now();
    await page.click(".pull-item .row[data-series] a");   // the staged series, from the Pull page
    await viewerLoaded();
    const s = await page.evaluate(() => ({ error: window.rcViewer.error, slices: window.rcViewer.slices,
      firstImageMs: window.rcViewer.firstImageMs, loadedMs: window.rcViewer.loadedMs, title: document.querySelector("#vw-title").textContent,
      wl: window.rcViewer.windowLevel(), series: new URL(location.href).searchParams.get("series"),
      identity: document.querySelector("#vw-identity .identity")?.innerText || "", doc_title: document.title }));
    await page.waitForFunction(() => document.querySelectorAll("#vw-thumbs button").length > 0, null, { timeout: 15000 });
    return { ...s, thumbs: await page.locator("#vw-thumbs button").count(), wall_ms: Date.now() - t0 };
  });
  if (ok) await tour();

  await step("lung-seg-with-push", async () => {
    await page.goto(`${UI}/run`);    // the Run page offers the last pull as input
    await page.waitForSelector('#plugin-list input[value="lung-seg"]', { timeout: 15000 });
    await page.check('#plugin-list input[value="lung-seg"]');
    await page.waitForSelector("#run-btn:not([disabled])");
    await page.check("#opt-push");
    await page.check("#opt-force");
    const [sent] = await Promise.all([page.waitForRequest((r) => /\/radcloud\/dispatch$/.test(r.url()), { timeout: 15000 }),
                                      page.click("#run-btn")]);
    await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
    const job = new URL(page.url()).searchParams.get("job");
    await page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL,
                               { timeout: 240000, polling: 250 });
    await page.waitForSelector("#job-pacs", { timeout: 10000 }).catch(() => {});
    return { job, state: await page.getAttribute("#job-state", "data-state"), options: sent.postDataJSON().options,
             pacs: await page.locator("#job-pacs").textContent({ timeout: 1000 }).catch(() => null) };
  });
  await resultSeries();
}

// A job that writes DICOM images (deidentify's copies of the pull): Results → Open in the viewer
// shows the result series itself.
async function resultSeries() {
  await step("result-series", async () => {
    await page.goto(`${UI}/run`);
    await page.waitForSelector('#plugin-list input[value="deidentify"]', { timeout: 15000 });
    await page.check('#plugin-list input[value="deidentify"]');
    await page.waitForSelector("#run-btn:not([disabled])");
    await page.check("#opt-force");
    await page.click("#run-btn");
    await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 20000 });
    const job = new URL(page.url()).searchParams.get("job");
    await page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL,
                               { timeout: 120000, polling: 250 });
    const state = await page.getAttribute("#job-state", "data-state");
    if (state !== "succeeded") throw new Error(`deidentify ended ${state}`);
    await page.click("#view-results");
    await page.waitForSelector("#open-viewer:not([hidden])", { timeout: 20000 });
    await page.click("#open-viewer");
    await viewerLoaded();
    return { job, url: page.url().replace(UI, ""), title: await page.textContent("#vw-title"),
             slices: await page.evaluate(() => window.rcViewer.slices) };
  });
}

// Scroll, window and zoom the open series.
async function tour() {
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

  await step("empty-draw", async () => {
    // A draw from an empty (0 x 0) canvas, as a released dwv/Konva layer's may be asked for: skipped
    // and counted, not a page error; a canvas with pixels is still drawn.
    return await page.evaluate(() => {
      const before = window.rcViewer.emptyDraws.count;
      const into = document.createElement("canvas");
      into.width = into.height = 4;
      const ctx = into.getContext("2d");
      let threw = null;
      const empty = document.createElement("canvas");   // 300 x 150 until told otherwise
      empty.width = 0;
      try { ctx.drawImage(empty, 0, 0); } catch (err) { threw = String(err); }
      const red = document.createElement("canvas");
      red.width = red.height = 4;
      red.getContext("2d").fillStyle = "#f00";
      red.getContext("2d").fillRect(0, 0, 4, 4);
      ctx.drawImage(red, 0, 0);
      return { threw, counted: window.rcViewer.emptyDraws.count - before, drawn: Array.from(ctx.getImageData(1, 1, 1, 1).data),
               where: window.rcViewer.emptyDraws.stacks.at(-1) || "" };
    });
  });

  await step("fit-without-width", async () => {
    // A resize while the viewer's box has no width (hidden, or the page being left): dwv would
    // throw "Cannot resize canvas 0, 1" as a page error; the viewer does not ask it to fit then.
    return await page.evaluate(async () => {
      const frames = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
      const box = document.getElementById("layerGroup0");
      const canvas = () => box.querySelector("canvas");
      const { width, minWidth } = box.style;
      box.style.width = box.style.minWidth = "0px";  // no width, its height kept: what dwv refuses
      window.dispatchEvent(new Event("resize"));
      await frames();
      const hidden = { box: box.clientWidth, canvas: canvas().width };
      Object.assign(box.style, { width, minWidth });
      window.dispatchEvent(new Event("resize"));
      await frames();
      return { hidden, shown: { box: box.clientWidth, canvas: canvas().width } };
    });
  });
}

async function results() {
  await step("seg-overlay", async () => {
    await page.goto(`${UI}/viewer?job=${encodeURIComponent(env.RC_JOB)}`);
    return overlay();
  });
  await step("sr-table", srTable);

  if (!await step("pull-from-pacs", async () => ({ series: await searchAndPull(true) }))) return;
  await step("pacs-seg-overlay", async () => {
    const link = page.locator(`.pull-item .row[data-series="${env.RC_SEG_SERIES}"] a`);
    await link.click();   // the SEG as the PACS gave it back, from the Pull page
    const shown = await overlay();
    await page.waitForFunction(() => document.querySelectorAll("#vw-thumbs button").length >= 3, null, { timeout: 15000 });
    const thumbs = await page.$$eval("#vw-thumbs button", (bs) => bs.map((b) => ({ caption: b.textContent, disabled: b.disabled })));
    return { ...shown, url: page.url().replace(UI, ""), thumbs };
  });
  await step("pacs-sr-table", srTable);
  await step("split-seg-overlay", async () => {
    // #19: a SEG series of two files (a box each, RC_SPLIT_SEG): both drawn, not only the first file.
    await page.goto(`${UI}/viewer?seg=${encodeURIComponent(env.RC_SPLIT_SEG)}`);
    await viewerLoaded("segLoaded");
    const out = { files: await page.evaluate(() => window.rcViewer.segDataIds.length), boxes: [] };
    for (const spec of env.RC_SPLIT_PROBES.split(";")) {   // "sop,row,col"
      const [sop, row, col] = spec.split(",");
      const k = await page.evaluate((s) => window.rcViewer.indexOfImage(s), sop);
      if (k < 0) throw new Error(`the source image ${sop} is not in the series shown`);
      await page.evaluate((k) => window.rcViewer.setIndex(k), k);
      await page.waitForTimeout(150);
      out.boxes.push({ index: k, ...(await probe(Number(row), Number(col))) });
    }
    out.segments = await page.evaluate(() => window.rcViewer.segments);
    out.labels = await page.$$eval("#vw-seg-list label", (ls) => ls.map((l) => l.textContent));
    for (const width of [1366, 390]) {
      await page.setViewportSize({ width, height: 900 });
      await page.screenshot({ path: `${SHOTS}/viewer-split-seg-${width}.png`, fullPage: true });
    }
    await page.setViewportSize({ width: 1366, height: 900 });
    return out;
  });
}
