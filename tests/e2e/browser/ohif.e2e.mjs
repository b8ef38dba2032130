// A study in Orthanc's own viewer: OHIF v3, served by the stack's Orthanc under /ohif/
// (deploy/ohif, ServeFolders) against Orthanc's /dicom-web, in headless Debian Chromium. Driven by
// test_zero_click.py on the real chest CT's study once lung-seg pushed its SEG and SR there.
//
// study-list:  /ohif/index.html is OHIF's study list (QIDO-RS): the study is listed (its patient);
// viewer:      /ohif/viewer?StudyInstanceUIDs=... lists the study's series (CT, SEG, SR) and
//              draws the CT (WebGL: Chromium's software GL, SwiftShader, in headless mode);
// ct-only:     the probe slice, before any segmentation: the canvas's RGBA at a voxel the SEG
//              marks and at one it does not (grey: a CT drawn through a grey window);
// seg-overlay: double-click the SEG, accept its loading: OHIF (cornerstone3D) reads the SEG and
//              draws it as a labelmap on its source series; the segment labels it read, and the
//              same two voxels of the same slice again;
// sr:          double-click the SR (radcloud.results.segsr's): OHIF's SR viewport reads its measurement
//              groups (a segment's volumetric and planar group merged by their tracking UID), shows the
//              image the planar group outlines the segment on, and draws the outline with a text box of
//              the merged measurements (OHIF: "<concept>: <value, 2 decimals> <UCUM unit>", 5 lines at most);
//              the record: those lines, the measurements as OHIF read them, the outline in image coordinates;
//
// Pixels are read from the viewport's canvas at the canvas point of the voxel's centre
// (cornerstone's imageToWorldCoords, then the viewport's worldToCanvas), on the slice whose
// SOP Instance UID is RC_PROBE_SOP. Prints one JSON line per step (harness.mjs).
//
// env: RC_ORTHANC (its base URL), RC_ORTHANC_USER / RC_ORTHANC_PASSWORD (Orthanc's own login:
//      the PACS's, given by the browser as a user would, never radcloud's), RC_STUDY, RC_PATIENT (as OHIF writes it),
//      RC_PROBE_SOP, RC_INSIDE / RC_OUTSIDE ("row,col"), RC_SERIES (the series descriptions, |-separated)
import { env, SHOTS, emit, external, consoleErrors, launch, stepper } from "./harness.mjs";

const BASE = env.RC_ORTHANC.replace(/\/$/, "");
const { browser, page } = await launch({
  viewport: { width: 1366, height: 860 },
  httpCredentials: { username: env.RC_ORTHANC_USER, password: env.RC_ORTHANC_PASSWORD },
});
const step = stepper(page, { shot: (name) => `${SHOTS}/ohif-${name}.png` });
// OHIF's onboarding tour counts as seen (OHIF keeps the ids of seen tours in localStorage
// "shownTours"): on a loaded machine it could appear after dismissGuides gave up waiting and
// take the double-click meant for the SEG (seen once beside other engineers' runs).
await page.addInitScript(() => localStorage.setItem("shownTours", JSON.stringify(["basicViewerTour"])));
const rc = (s) => s.split(",").map(Number);

// OHIF's first-visit guides: its onboarding tour and the investigational-use banner.
async function dismissGuides() {
  await page.getByText("Skip all").click({ timeout: 20000 }).catch(() => {});
  await page.getByText("Confirm and hide").click({ timeout: 3000 }).catch(() => {});
}

// RGBA of the viewport canvas at voxel (row, col) of the slice RC_PROBE_SOP, once it is shown
// and `settled(px)` holds or `ms` have passed (a labelmap is drawn a few frames after the CT).
async function probe(points, { settled = () => true, ms = 3000 } = {}) {
  return page.evaluate(async ({ sop, points, ms, settled }) => {
    const cs = window.cornerstone;
    const vp = cs.getEnabledElements()[0].viewport;
    const ids = vp.getImageIds();
    const index = ids.findIndex((id) => id.includes(`/instances/${sop}/`));
    if (index < 0) throw new Error(`the viewport's stack has no instance ${sop} (${ids.length} images)`);
    if (vp.getCurrentImageIdIndex() !== index) await vp.setImageIdIndex(index);
    const ok = new Function("px", `return (${settled})(px)`);
    const read = () => {
      vp.render();
      const ctx = vp.canvas.getContext("2d");
      const dpr = vp.canvas.width / vp.canvas.clientWidth;
      return points.map(([row, col]) => {
        const world = cs.utilities.imageToWorldCoords(ids[index], [col + 0.5, row + 0.5]);
        const [x, y] = vp.worldToCanvas(world);
        return [...ctx.getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data];
      });
    };
    const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 50)));
    const t0 = performance.now();
    await frame(); await frame();
    let px = read();
    while (!ok(px) && performance.now() - t0 < ms) { await frame(); px = read(); }
    return { index, shown: vp.getCurrentImageIdIndex(), of: ids.length, px };
  }, { sop: env.RC_PROBE_SOP, points, ms, settled: settled.toString() });
}

const inside = rc(env.RC_INSIDE), outside = rc(env.RC_OUTSIDE);
const series = env.RC_SERIES.split("|");

await step("study-list", async () => {
  await page.goto(`${BASE}/ohif/index.html`);
  await page.getByText(env.RC_PATIENT).first().waitFor({ timeout: 60000 });
  return { url: new URL(page.url()).pathname, listed: await page.getByText(env.RC_PATIENT).count() };
});

await step("viewer", async () => {
  await page.goto(`${BASE}/ohif/viewer?StudyInstanceUIDs=${env.RC_STUDY}`);
  await dismissGuides();
  const listed = [];
  for (const s of series) {
    // OHIF cuts long descriptions with an ellipsis: the first 20 characters are enough.
    const shown = page.getByText(s.slice(0, 20), { exact: false }).first();
    if (await shown.waitFor({ timeout: 30000 }).then(() => true, () => false)) listed.push(s);
  }
  await page.waitForFunction(() => {
    const el = window.cornerstone && window.cornerstone.getEnabledElements()[0];
    return el && el.viewport.getImageIds().length > 0 && el.viewport.getCurrentImageIdIndex() >= 0;
  }, null, { timeout: 60000 });
  const gl = await page.evaluate(() => {
    const g = document.createElement("canvas").getContext("webgl2");
    return g ? g.getParameter(g.getExtension("WEBGL_debug_renderer_info")?.UNMASKED_RENDERER_WEBGL ?? g.RENDERER) : null;
  });
  return { listed, webgl: gl };
});

let before = null;
await step("ct-only", async () => {
  before = await probe([inside, outside], { settled: (px) => px[0][3] > 0 });
  return before;
});

await step("seg-overlay", async () => {
  await page.getByText(series[1].slice(0, 20)).first().dblclick();
  // "open this Segmentation?": 60 s, as the waits around it; at load 16 a 30 s click once ran out while
  // OHIF, busy loading, had not yet taken the click (the button was found, visible and stable)
  await page.getByText("Yes", { exact: true }).click({ timeout: 60000 });
  const labels = await page.waitForFunction(() => {
    const segs = window.cornerstoneTools?.segmentation?.state?.getSegmentations?.() || [];
    const labels = segs.flatMap((s) => Object.values(s.segments || {}).filter(Boolean).map((x) => x.label));
    return labels.length ? labels : null;
  }, null, { timeout: 60000, polling: 250 }).then((h) => h.jsonValue());
  const seen = await probe([inside, outside], {
    settled: (px) => Math.abs(px[0][0] - px[0][1]) > 10 || Math.abs(px[0][0] - px[0][2]) > 10, ms: 10000 });
  return { labels, before: before && before.px, ...seen };
});

await step("sr", async () => {
  await page.getByText(series[2].slice(0, 20)).first().dblclick();
  // the text box OHIF draws beside the outline: one <tspan> a line, in the viewport's SVG layer.
  // cornerstone draws annotations when an image renders: when the SR's measurements were hydrated
  // after the referenced image's first render (a race seen once in a fresh-clone run: the right image
  // shown, no outline, for 60 s), nothing draws them until the next render, which a user's first
  // move of the mouse or wheel makes. The wait renders the viewport once a second, as that move would.
  const lines = await page.waitForFunction(() => {
    const boxes = [...document.querySelectorAll("svg text")]
      .map((t) => [...t.querySelectorAll("tspan")].filter((s) => s.textContent).map((s) => s.textContent))
      .filter((box) => box.length);
    if (boxes.length) return boxes;
    window.__rcPolls = (window.__rcPolls || 0) + 1;
    if (window.__rcPolls % 4 === 0) window.cornerstone?.getEnabledElements().forEach((el) => el.viewport.render());
    return null;
  }, null, { timeout: 60000, polling: 250 }).then((h) => h.jsonValue());
  return page.evaluate((lines) => {
    const cs = window.cornerstone, tools = window.cornerstoneTools;
    const sop = (imageId) => (imageId || "").match(/instances\/([^/]+)/)?.[1] || null;
    const sr = window.services.displaySetService.getActiveDisplaySets().find((d) => d.Modality === "SR");
    const vp = cs.getEnabledElements()[0].viewport;
    const drawn = tools.annotation.state.getAllAnnotations().filter((a) => a.metadata.toolName === "DICOMSRDisplay")
      .map((a) => ({
        image: sop(a.metadata.referencedImageId),
        // the outline back in the image's pixel coordinates (cornerstone's: 0,0 the first pixel's corner)
        outline: Object.values(a.data.renderableData).flat().flatMap((points) => points.map((p) =>
          cs.utilities.worldToImageCoords(a.metadata.referencedImageId, p).map((v) => Math.round(v * 100) / 100))),
      }));
    return {
      lines,
      measurements: (sr?.measurements || []).map((m) => ({
        id: m.TrackingIdentifier, loaded: m.loaded, graphic: m.graphicType,
        labels: m.labels.map((l) => `${l.label}: ${l.value}`) })),
      drawn, shown: sop(vp.getCurrentImageId()),
    };
  }, lines);
});

emit({ step: "summary", external_requests: external, console_errors: consoleErrors });
await browser.close();
