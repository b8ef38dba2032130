/* The viewer page: original DICOM of a staged series, drawn by dwv (npm,
 * bundled into vendor/dwv by `make install`), with window/level applied to
 * the raw pixel values in HU.
 *
 *   viewer?series=<SeriesInstanceUID>          a staged series
 *   viewer?job=<job id>                        a job's SEG/SR over its source series, or (none)
 *                                              the DICOM images the job wrote
 *   viewer?seg=<SeriesInstanceUID>             a staged SEG series (pulled from the PACS) over its
 *                                              source series, with the study's SRs citing it; a
 *                                              series=<uid> that is a SEG opens this way too
 *
 * The viewer action answers presigned URLs of the instances (never pixels:
 * an action result is capped at 1 MB) and writes who viewed which study to
 * the audit trail; the browser then reads the instances from the object
 * store itself. Interaction is ours, not dwv's tools, so that one gesture
 * means one thing: wheel/arrows/slider scroll, drag windows, Shift+drag
 * pans, Ctrl+wheel and +/- zoom. window.rcViewer exposes the state the
 * browser tests and bench/viewer_bench.py read. */
const params = new URLSearchParams(location.search);
const opened = performance.now();
// The first image waits on two things that do not depend on each other: dwv's
// module (600 kB to fetch, parse and run) and the viewer action's answer (the
// instances' URLs). Ask the action first, then import: they overlap.
const firstAnswer = askFirst();

// dwv's module, by the content-hashed name viewer.html preloads (its fetch starts with the
// page's; the ui action lets browsers keep it for good, and the other pages fetch it ahead
// at idle: app.js).
const { App, AppOptions, ViewConfig, WindowLevel, Index, MaskSegmentViewHelper, Point2D, DicomParser } =
  await import(document.getElementById("rc-dwv").href);
const dwvReady = performance.now();   // the module fetched, compiled and run (bench/viewer_bench.py's phases)

/* The first request of what the URL asks to open (null: nothing to ask), started before dwv loads.
 * A failure is handled where the answer is awaited (main); the catch here only keeps it from
 * counting as unhandled in the meantime. */
function askFirst() {
  const { api } = window.RC;
  const series = params.get("series"), job = params.get("job"), seg = params.get("seg");
  let first = null;
  if (job) first = api(`viewer/job/${encodeURIComponent(job)}`, { method: "GET", query: { series } });
  else if (seg) first = api(`viewer/seg/${encodeURIComponent(seg)}`, { method: "GET" });
  else if (series) first = api(`viewer/series/${encodeURIComponent(series)}`, { method: "GET" });
  if (first) first.catch(() => {});
  return first;
}

/* dwv 0.36 reads a SEG frame's segment number from the per-frame functional
 * groups only; a SEG of a single segment (highdicom writes those) may carry
 * its Segment Identification in the shared functional groups instead, as the
 * standard allows for a group common to every frame. Copy it into each frame
 * once parsed, so dwv finds it where it looks. */
const dicomElements = DicomParser.prototype.getDicomElements;
DicomParser.prototype.getDicomElements = function () {
  const elements = dicomElements.call(this);
  const shared = elements["52009229"], perFrame = elements["52009230"];
  const id = shared && shared.value && shared.value[0] && shared.value[0]["0062000A"];
  if (id && perFrame && perFrame.value) for (const item of perFrame.value) if (!item["0062000A"]) item["0062000A"] = id;
  return elements;
};

const { $, el, api, showError, derivedBadge } = window.RC;
const stage = $("#vw-stage");
const slider = $("#vw-slice");
const errorBox = $("#vw-error");
const PRESETS = { lung: [-600, 1500], mediastinum: [50, 350], bone: [400, 1800], brain: [40, 80] };
// dwv's decoders (workers) cover these; JPEG-LS and the JPEG 2000 parts
// beyond Part 1 do not decode in the browser.
const UNSUPPORTED_SYNTAX = { "1.2.840.10008.1.2.4.80": "JPEG-LS lossless", "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
  "1.2.840.10008.1.2.4.201": "HTJ2K lossless", "1.2.840.10008.1.2.4.202": "HTJ2K lossless RPCL", "1.2.840.10008.1.2.4.203": "HTJ2K" };

// Instances requested at once: the first slices arrive before the rest are asked for (all 300 at once
// share the connections and the main thread with the first), the whole series no later.
const BATCH = 4;
// Every URL here is a staged DICOM instance: say so, and dwv skips asking each of its loaders about
// each URL (it parses the presigned URL per loader), which, before it sends the first request, took
// 65-103 ms for 300 URLs in headless Chromium (10-18 ms told; the first slice is asked for that much sooner).
const DICOM = { forceLoader: "dicom" };

const state = window.rcViewer = {
  // Where the first image's time goes, in ms from `opened` (bench/viewer_bench.py's phases): dwv's module
  // run, the first answer in the page's hands, dwv's loadURLs called and returned.
  opened, dwvReadyMs: dwvReady - opened, answeredMs: null, loadCalledMs: null, loadSentMs: null,
  firstImageMs: null, loadedMs: null, loaded: false, slices: 0, error: null,
  // A SEG series may be several files (a segment each, or frames split): each is a data of its own,
  // overlaid on the source; segDataId is the first (what older callers read), segDataIds all of them.
  imageDataId: null, segDataId: null, segDataIds: [], segments: [], srRows: [], renders: 0,
  index: () => currentIndex(), setIndex: (k) => setIndex(k), windowLevel: () => currentWl(),
  setWindowLevel: (c, w) => setWl(c, w), pixelAt: (row, col) => pixelAt(row, col),
  segOpacity: () => segOpacity(), indexOfImage: (sopUid) => indexOfImage(sopUid),
};

// dwv's layers (its view layers, Konva's shapes) can be asked to draw from a canvas that is empty
// at that moment (0 x 0: released by a reset or a cache, or not sized yet). Chromium then throws
// "drawImage … a canvas element with a width or height of 0" from an animation frame or an event,
// outside any promise: a page error, where nothing would have been drawn anyway. Such a draw is
// skipped and counted here, with eight lines of its stack (rcViewer.emptyDraws, up to 5), each
// of those five also said on the console as a warning, so where it came from can still be found.
// Seen in CI (stop 34): dwv's App.fitToContainer -> stage -> layer fitToContainer -> its draw, with
// a layer whose own canvas holds nothing yet; eight lines should name the radcloud caller too.
const drawImage = CanvasRenderingContext2D.prototype.drawImage;
state.emptyDraws = { count: 0, stacks: [] };
CanvasRenderingContext2D.prototype.drawImage = function guardedDrawImage(source, ...rest) {
  if (source instanceof HTMLCanvasElement && (source.width === 0 || source.height === 0)) {
    state.emptyDraws.count += 1;
    if (state.emptyDraws.stacks.length < 5) {
      const where = (new Error().stack || "").split("\n").slice(2, 10).map((l) => l.trim()).join(" < ");
      state.emptyDraws.stacks.push(where);
      console.warn(`radcloud viewer: skipped drawing an empty canvas (${where})`);
    }
    return undefined;
  }
  return drawImage.call(this, source, ...rest);
};

let app = null;
let dragging = null;
// Settles once the first image is on screen (or its load failed): what waits for it (the
// series strip) does not compete with the first slices for connections and the main thread.
let firstShown;
const shown = new Promise((resolve) => { firstShown = resolve; });

function viewController(dataId) {
  const id = dataId ?? state.imageDataId;
  if (id === null || !app) return null;
  const layers = app.getViewLayersByDataId(id);
  return layers.length ? layers[0].getViewController() : null;
}

/* What is on screen at voxel (row, col) of the current slice: the RGBA of the
 * image layer's canvas and of the SEG layer's (null when none), read at the
 * display point dwv maps that voxel's centre to. For tests and the bench. */
function pixelAt(row, col) {
  const read = (dataId) => {
    if (dataId === null || !app) return null;
    const layer = app.getViewLayersByDataId(dataId)[0];
    if (!layer) return null;
    const node = document.getElementById(layer.getId());
    const canvas = node && (node.tagName === "CANVAS" ? node : node.querySelector("canvas"));
    if (!canvas) return null;
    const at = layer.planePosToDisplay(new Point2D(col + 0.5, row + 0.5));
    return Array.from(canvas.getContext("2d").getImageData(Math.floor(at.getX()), Math.floor(at.getY()), 1, 1).data);
  };
  // The SEG layers' colour there: the first file that marks the voxel (else the first file's transparent pixel).
  const segs = state.segDataIds.map(read).filter(Boolean);
  const seg = segs.find((px) => px[3] > 0) || segs[0] || null;
  return { image: read(state.imageDataId), seg, segs, index: currentIndex() };
}

function scrollDim(vc) { return vc.getScrollDimIndex(); }
function sliceCount(vc) { return vc.getImageSize().get(scrollDim(vc)); }
function currentIndex() {
  const vc = viewController();
  return vc ? vc.getCurrentIndex().get(scrollDim(vc)) : 0;
}

function setIndex(k) {
  const vc = viewController();
  if (!vc) return false;
  const n = sliceCount(vc);
  const values = vc.getCurrentIndex().getValues().slice();
  values[scrollDim(vc)] = Math.max(0, Math.min(n - 1, Math.round(k)));
  return vc.setCurrentIndex(new Index(values));
}

/* The slice showing the image of this SOP Instance UID (-1: none); leaves the view there. */
function indexOfImage(sopUid) {
  const vc = viewController();
  if (!vc) return -1;
  for (let k = 0; k < sliceCount(vc); k++) {
    setIndex(k);
    if (vc.getCurrentImageUid() === sopUid) return k;
  }
  return -1;
}

function currentWl() {
  const vc = viewController();
  if (!vc) return null;
  const wl = vc.getWindowLevel();
  return { center: wl.center, width: wl.width };
}

function setWl(center, width) {
  const vc = viewController();
  if (!vc || !vc.canWindowLevel()) return;
  vc.setWindowLevel(new WindowLevel(center, Math.max(1, width)));
}

function pressPreset(name) {
  for (const b of $("#vw-presets").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.preset === name));
}

function showSlice() {
  const vc = viewController();
  if (!vc) return;
  const n = sliceCount(vc);
  state.slices = n;
  const k = currentIndex();
  slider.max = String(Math.max(0, n - 1));
  slider.value = String(k);
  slider.disabled = n < 2;
  $("#vw-slice-label").textContent = `Slice ${k + 1} / ${n}`;
  const wl = currentWl();
  if (wl) $("#vw-wl").textContent = `W ${Math.round(wl.width)} L ${Math.round(wl.center)}`;
}

function fail(message) {
  state.error = message;
  showError(errorBox, new Error(message));
}

function initApp() {
  app = new App();
  state.app = app;
  const options = new AppOptions({ "*": [new ViewConfig("layerGroup0")] });
  options.viewOnFirstLoadItem = true;
  app.init(options);
  app.addEventListener("renderend", (event) => {
    state.renders += 1;
    if (state.firstImageMs === null && event.dataid === state.imageDataId) {
      state.firstImageMs = performance.now() - state.opened;
      fit(60);
      firstShown();
    }
    showSlice();
  });
  app.addEventListener("loadprogress", (event) => {
    if (event.lengthComputable && event.dataid === state.imageDataId) {
      $("#vw-progress").textContent = `Loading ${Math.round((100 * event.loaded) / event.total)} %`;
    }
  });
  app.addEventListener("load", (event) => {
    if (event.dataid === state.imageDataId) {
      state.loaded = true;
      state.loadedMs = performance.now() - state.opened;
      $("#vw-progress").textContent = "";
      showSlice();
    } else if (state.segDataIds.includes(event.dataid)) {
      segmentationLoaded(event.dataid);
    }
  });
  app.addEventListener("positionchange", showSlice);
  app.addEventListener("wlchange", showSlice);
  app.addEventListener("error", (event) => {
    firstShown();
    const text = String((event.error && event.error.message) || event.error || "unknown error");
    const syntax = Object.keys(UNSUPPORTED_SYNTAX).find((uid) => text.includes(uid));
    fail(syntax ? `These images are compressed as ${UNSUPPORTED_SYNTAX[syntax]} (${syntax}), which the browser viewer cannot decode; open them in the PACS viewer, or run dcm2png.`
                : `Could not show the images: ${text}`);
  });
  window.addEventListener("resize", () => fit());
}

// dwv throws "Cannot resize canvas 0, 1" when asked to fit a container with no width (a page
// error): the viewer's had none when its first image ended rendering, once, in a CI run on a
// loaded machine. Fitted only while the box has a size; for the first image, tried again on each
// of the next ``frames`` animation frames until it has one.
function fit(frames = 0) {
  const box = document.getElementById("layerGroup0");
  if (app && box && box.clientWidth > 0 && box.clientHeight > 0) {
    app.fitToContainer();
  } else if (frames > 0) {
    requestAnimationFrame(() => fit(frames - 1));
  }
}

/* ---- interaction ---------------------------------------------------------------------- */
function wire() {
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey) {
      const r = stage.getBoundingClientRect();
      app.zoom(event.deltaY < 0 ? 0.1 : -0.1, event.clientX - r.left, event.clientY - r.top);
    } else {
      setIndex(currentIndex() + Math.sign(event.deltaY));
    }
  }, { passive: false });
  stage.addEventListener("keydown", (event) => {
    const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -10, PageDown: 10 }[event.key];
    if (step !== undefined) setIndex(currentIndex() + step);
    else if (event.key === "Home") setIndex(0);
    else if (event.key === "End") setIndex(state.slices - 1);
    else if (event.key === "+" || event.key === "=") app.zoom(0.1, stage.clientWidth / 2, stage.clientHeight / 2);
    else if (event.key === "-") app.zoom(-0.1, stage.clientWidth / 2, stage.clientHeight / 2);
    else return;
    event.preventDefault();
  });
  slider.addEventListener("input", () => setIndex(Number(slider.value)));
  stage.addEventListener("pointerdown", (event) => {
    stage.focus();
    stage.setPointerCapture(event.pointerId);
    dragging = { x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button === 1 || event.button === 2,
                 wl: currentWl() };
  });
  stage.addEventListener("pointermove", (event) => {
    if (!dragging) return;
    const dx = event.clientX - dragging.x, dy = event.clientY - dragging.y;
    if (dragging.pan) {
      app.translate(dx, dy);
      dragging.x = event.clientX; dragging.y = event.clientY;
    } else if (dragging.wl) {
      // Right widens, down raises the level: 2 HU a pixel, as PACS viewers do.
      setWl(dragging.wl.center + 2 * dy, dragging.wl.width + 2 * dx);
      pressPreset("");
    }
  });
  const stop = () => { dragging = null; };
  stage.addEventListener("pointerup", stop);
  stage.addEventListener("pointercancel", stop);
  stage.addEventListener("contextmenu", (event) => event.preventDefault());
  $("#vw-presets").addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const vc = viewController();
    if (!vc) return;
    if (PRESETS[button.dataset.preset]) setWl(...PRESETS[button.dataset.preset]);
    else vc.setWindowLevelPresetById(0);  // dwv's first preset: the window stored in the images
    pressPreset(button.dataset.preset);
  });
  $("#vw-reset").addEventListener("click", () => {
    app.resetZoomPan();
    const vc = viewController();
    if (vc) vc.setWindowLevelPresetById(0);
    pressPreset("default");
  });
}

/* ---- data ----------------------------------------------------------------------------- */
/* The images to scroll: dwv reads the instances in order, BATCH at a time; the first drawn is
 * the first to arrive, so the first URLs are on screen while the rest still load. */
function loadImages(urls) {
  state.loadCalledMs = performance.now() - state.opened;
  state.imageDataId = app.loadURLs(urls, { ...DICOM, batchSize: BATCH });
  state.loadSentMs = performance.now() - state.opened;   // dwv opened the XHRs and sent the first BATCH
}

/* A series' URLs, every page of them; ``asked``: its first page, when already asked for. */
async function seriesUrls(uid, asked = null) {
  let answer = await (asked || api(`viewer/series/${encodeURIComponent(uid)}`, { method: "GET" }));
  if (state.answeredMs === null) state.answeredMs = performance.now() - state.opened;  // the page has the URLs
  const first = answer;
  const urls = answer.instances.map((i) => i.url);
  while (answer.next_offset !== null && answer.next_offset !== undefined) {
    answer = await api(`viewer/series/${encodeURIComponent(uid)}`, { method: "GET", query: { offset: answer.next_offset } });
    urls.push(...answer.instances.map((i) => i.url));
  }
  return { info: first, urls };
}

function title(info) {
  const t = info.tags || {};
  return [t.Modality, t.SeriesNumber !== undefined ? `#${t.SeriesNumber}` : "", t.SeriesDescription, `${info.count} images`]
    .filter(Boolean).join(" · ");
}

/* Whose images these are, before any pixel: the fixed identity header every page with a
 * patient's images has (RC.identity, as on the results and job pages). */
function showIdentity(info) {
  $("#vw-identity").replaceChildren(window.RC.identity(info.subject, { series: [info.SeriesInstanceUID] }));
  const p = ((info.subject && info.subject.patients) || [])[0];
  if (p) document.title = `${window.RC.fmt.name(p.PatientName)} (${p.PatientID || "no MRN"}) · Viewer · radcloud`;
}

async function openSeries(uid) {
  const { info, urls } = await seriesUrls(uid, firstAnswer);
  // A Segmentation is not an image to scroll: it is drawn over the series it was made on.
  if ((info.tags || {}).Modality === "SEG") return openSeg(uid);
  showIdentity(info);
  if ((info.tags || {}).Modality === "SR") {
    fail("This series is a structured report (measurements, no image): open the segmentation it measures, and its table shows beside it.");
    return info;
  }
  $("#vw-title").textContent = title(info);
  if (!urls.length) { fail("This series has no staged images."); return info; }
  loadImages(urls);
  return info;
}

async function thumbnails(studyUid, current) {
  let study;
  try {
    study = await api(`viewer/study/${encodeURIComponent(studyUid)}`, { method: "GET" });
  } catch (err) { return; }  // the strip is a convenience: the open series is what matters
  const box = $("#vw-thumbs");
  box.replaceChildren();
  for (const s of study.series) {
    const modality = (s.tags || {}).Modality;
    const canvas = el("canvas", { width: 128, height: 128, "aria-hidden": "true" });
    const button = el("button", { type: "button", "aria-current": String(s.SeriesInstanceUID === current),
      title: title(s) }, canvas, el("span", { class: "cap" }, title(s), s.derived ? " " : "", derivedBadge(s)));
    if (modality === "SR") {
      // A report has no image: its measurements show beside the segmentation it measures.
      button.disabled = true;
      button.title = `${title(s)}: measurements, shown beside the segmentation they measure`;
    }
    button.addEventListener("click", () => {
      const next = new URL(location.href);
      next.search = new URLSearchParams({ series: s.SeriesInstanceUID }).toString();
      location.assign(next.toString());
    });
    box.append(button);
    if (modality === "SEG" || modality === "SR") label(canvas, modality === "SEG" ? "Segmentation" : "Report (SR)");
    else drawThumbnail(s.thumbnail_url, canvas).catch(() => {});
  }
}

/* A series without an image of its own (SEG, SR): its kind, written on the tile. */
function label(canvas, text) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#bbb";
  ctx.font = "15px sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(text, canvas.width / 2, canvas.height / 2);
}

/* A thumbnail is the series' middle image, drawn by a small dwv app of its own. */
async function drawThumbnail(url, canvas) {
  const holder = el("div", { id: `thumb-${Math.random().toString(36).slice(2)}`, class: "vw-offscreen" });
  holder.style.cssText = "position:absolute;left:-10000px;width:128px;height:128px";
  document.body.append(holder);
  const thumbApp = new App();
  const options = new AppOptions({ "*": [new ViewConfig(holder.id)] });
  thumbApp.init(options);
  await new Promise((resolve, reject) => {
    thumbApp.addEventListener("renderend", resolve);
    thumbApp.addEventListener("error", reject);
    thumbApp.loadURLs([url], DICOM);
  });
  thumbApp.fitToContainer();
  const source = holder.querySelector("canvas");
  const ctx = canvas.getContext("2d");
  const s = Math.min(canvas.width / source.width, canvas.height / source.height);
  ctx.drawImage(source, (canvas.width - source.width * s) / 2, (canvas.height - source.height * s) / 2,
                source.width * s, source.height * s);
  // dwv draws through Konva, which batches draws into the next animation frame; reset() destroys
  // the layers and releases their canvases (0 x 0). A draw still queued then (fitToContainer's)
  // threw "drawImage … a canvas element with a width or height of 0" outside any promise: let
  // the queued frames run first.
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  thumbApp.reset();
  holder.remove();
}

/* ---- segmentation --------------------------------------------------------------------- */
// One helper per SEG file: segment numbers are per file (two files may each have a segment 1).
const maskHelpers = new Map();

/* One file of the SEG series is in: list its segments (in file order, whatever order they load). */
function segmentationLoaded(dataId) {
  const data = app.getData(dataId);
  const segments = (data && data.image && data.image.getMeta().custom && data.image.getMeta().custom.segments) || [];
  const file = state.segDataIds.indexOf(dataId);
  const helper = new MaskSegmentViewHelper();
  maskHelpers.set(dataId, { helper, segments });
  const vc = viewController(dataId);
  if (vc) vc.setMaskViewHelper(helper);
  setSegOpacity(Number($("#vw-seg-opacity").value) / 100);
  const loaded = state.segDataIds.filter((id) => maskHelpers.has(id));
  state.segments = loaded.flatMap((id) => maskHelpers.get(id).segments.map((s) => ({ number: s.number, label: s.label })));
  $("#vw-seg-list").replaceChildren(...loaded.flatMap((id) => maskHelpers.get(id).segments.map((s) => segmentItem(id, s))));
  $("#vw-segments").hidden = false;
  state.segLoaded = loaded.length === state.segDataIds.length;
  if (file < 0) console.warn("a segmentation file loaded that this page did not ask for");
}

function segmentItem(dataId, s) {
  const { helper } = maskHelpers.get(dataId);
  const file = state.segDataIds.indexOf(dataId);
  const id = file ? `seg-${file}-${s.number}` : `seg-${s.number}`;
  const rgb = s.displayRGBValue || { r: 255, g: 0, b: 0 };
  const box = el("input", { type: "checkbox", "data-segment": String(s.number), "data-file": String(file), id });
  box.checked = !helper.isHidden(s.number);
  box.addEventListener("change", () => {
    if (box.checked) helper.removeFromHidden(s.number); else helper.addToHidden(s.number);
    const segVc = viewController(dataId);
    if (segVc) segVc.setMaskViewHelper(helper);  // re-applies the alpha function: redraws
  });
  return el("li", {}, box, el("span", { class: "vw-swatch", style: `background: rgb(${rgb.r},${rgb.g},${rgb.b})` }),
    // Files after the first are named: two files may each call their segment "Lesion".
    el("label", { for: id }, s.label || `Segment ${s.number}`, state.segDataIds.length > 1 ? el("span", { class: "muted" }, ` (file ${file + 1})`) : ""));
}

function segOpacity() {
  const layers = state.segDataId === null ? [] : app.getViewLayersByDataId(state.segDataId);  // all files share it
  return layers.length ? layers[0].getOpacity() : null;
}

function setSegOpacity(alpha) {
  for (const layer of state.segDataIds.flatMap((id) => app.getViewLayersByDataId(id))) {
    layer.setOpacity(alpha);
    layer.draw();
  }
}

function srTable(rows) {
  state.srRows = rows;
  const tbody = $("#vw-sr-table tbody");
  tbody.replaceChildren(...rows.map((r) => el("tr", {},
    el("td", {}, r.segment || ""), el("td", {}, r.name), el("td", { class: "num" }, Number(r.value).toFixed(1)), el("td", {}, r.unit || ""))));
  $("#vw-sr").hidden = !rows.length;
}

/* A SEG over its source series, and the SR rows (the viewer action's job and seg answers). */
async function showOverlay(answer, caption) {
  const { info, urls } = await seriesUrls(answer.source.SeriesInstanceUID);
  showIdentity(info);
  $("#vw-title").textContent = `${title(info)} · ${caption}`;
  srTable(answer.measurements || []);
  loadImages(urls);
  if (answer.segmentation) {
    // The SEG goes on top once the source is in: dwv places it by its frame of reference.
    const loadSeg = (event) => {
      if (event.dataid !== state.imageDataId) return;
      app.removeEventListener("load", loadSeg);
      // Every file of the SEG series, each a data of its own (dwv builds one mask per SEG object).
      state.segDataIds = (answer.segmentation.urls || [answer.segmentation.url]).map((url) => app.loadURLs([url], DICOM));
      state.segDataId = state.segDataIds[0];
    };
    app.addEventListener("load", loadSeg);
  }
  return info;
}

async function openJob(jobId) {
  const answer = await firstAnswer;
  if (!answer.source && answer.images) {
    // No segmentation: the job's own DICOM images (a result series: de-identified copies, a resampled CT...).
    $("#vw-title").textContent = `Results of job ${jobId.slice(0, 12)} · ${answer.images.count} images`;
    // A long result series comes in pages, as a staged series does (seriesUrls).
    const urls = answer.images.instances.map((i) => i.url);
    for (let page = answer.images; page.next_offset !== null && page.next_offset !== undefined;) {
      page = (await api(`viewer/job/${encodeURIComponent(jobId)}`, { method: "GET", query: { offset: page.next_offset } })).images;
      urls.push(...page.instances.map((i) => i.url));
    }
    loadImages(urls);
    return null;
  }
  if (!answer.source) { fail("This job's results hold no DICOM image, segmentation or report to show."); return null; }
  return showOverlay(answer, `job ${jobId.slice(0, 12)}`);
}

async function openSeg(uid) {
  // A series= link to a SEG comes here after the series answer: then the seg answer is asked now.
  const answer = await (params.get("seg") === uid ? firstAnswer : api(`viewer/seg/${encodeURIComponent(uid)}`, { method: "GET" }));
  return showOverlay(answer, `segmentation ${answer.segmentation.name || ""}`.trim());
}

async function main() {
  initApp();
  wire();
  $("#vw-seg-opacity").addEventListener("input", (e) => setSegOpacity(Number(e.target.value) / 100));
  const series = params.get("series"), job = params.get("job"), seg = params.get("seg");
  try {
    let info = null;
    if (job) info = await openJob(job);
    else if (seg) info = await openSeg(seg);
    else if (series) info = await openSeries(series);
    else { fail("No series chosen: open one from the Pull or Results page."); return; }
    // The strip reads another action and a slice of each series: after the first image.
    if (info && info.StudyInstanceUID) {
      if (state.imageDataId !== null) await shown;
      thumbnails(info.StudyInstanceUID, info.SeriesInstanceUID);
    }
  } catch (err) {
    state.error = err.message;
    showError(errorBox, err);
  }
}

main();
