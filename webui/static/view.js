/* Results of one job: thumbnail grid, a slice scroller with window presets,
 * tables for JSON/CSV, downloads, a link to the study in the PACS viewer. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, cfg } = window.RC;
  const jobId = new URLSearchParams(location.search).get("job");
  const canvas = $("#canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  let stack = [];          // image outputs of the series on view, in order
  let index = 0;
  let windowPreset = "";   // "" = as stored, else "width,center" in HU
  let raw = null;          // ImageData of the current slice as stored
  const thumbUrls = {};

  const notLoading = () => $("#files tbody").replaceChildren();
  if (!jobId) { notLoading(); showError($("#view-error"), new Error("No job chosen: open results from the Jobs page.")); return; }
  $("#view-job").textContent = jobId.slice(0, 12);

  async function load() {
    let manifest;
    try {
      manifest = await api(`results/${encodeURIComponent(jobId)}`, { method: "GET", query: { urls: "true" } });
    } catch (err) { notLoading(); showError($("#view-error"), err); return; }
    showSubject(manifest);
    $("#view-state").replaceChildren(RC.stateBadge(manifest.state),
      " ", manifest.cached ? el("span", { class: "badge cached", title: "Reused from an earlier identical job" + (manifest.results_of ? ` (${manifest.results_of.slice(0, 12)})` : "") }, "cached result") : "",
      " ", el("span", { class: "muted" }, `${manifest.count ?? (manifest.outputs || []).length} files · ${fmt.bytes(manifest.bytes)} · ${manifest.plugin || ""} ${manifest.plugin_version || ""}`));
    const outputs = manifest.outputs || [];
    renderFiles(outputs);
    const isImage = (o) => o.image || /^image\//.test(o.content_type || "");
    // Plugins like dcm2png write their own thumbnails/ and montage/: use
    // those as previews (no extra request) and keep them out of the stack.
    for (const o of outputs) if (isImage(o) && /(^|\/)thumbnails\//.test(o.name)) thumbUrls[o.name.replace(/(^|\/)thumbnails\//, "$1")] = o.url;
    const montages = outputs.filter((o) => isImage(o) && /(^|\/)montage\//.test(o.name));
    const images = outputs.filter((o) => isImage(o) && !/(^|\/)(thumbnails|montage)\//.test(o.name));
    const tables = outputs.filter((o) => /json|csv/.test(o.content_type || "") || /\.(json|csv)$/i.test(o.name));
    const order = await sliceOrder(tables);
    renderThumbs(images, montages, order);
    tables.slice(0, 5).forEach(renderTable);
    if (outputs.some((o) => /\.dcm$/i.test(o.name))) {  // DICOM results (SEG, SR...): over their source in the viewer
      const open = $("#open-viewer");
      open.href = window.RC.pageUrl("viewer", { job: jobId });
      open.hidden = false;
    }
    const study = outputs.find((o) => o.study_uid);
    const viewer = document.querySelector('meta[name="radcloud-viewer"]');
    if (study && viewer && viewer.content) {
      const link = $("#orthanc-link");
      link.href = viewer.content.replace("{study_uid}", encodeURIComponent(study.study_uid));
      link.hidden = false;
    }
  }

  // The identity header; the page title names the patient too (tabs, history).
  function showSubject(manifest) {
    const subject = manifest.subject || null;
    $("#identity").replaceChildren(RC.identity(subject));
    const p = subject && subject.patients && subject.patients[0];
    $("#view-job").textContent = `${manifest.plugin || ""} · job ${jobId.slice(0, 12)}`;
    if (p) document.title = `${fmt.name(p.PatientName)} (${p.PatientID || "no MRN"}) · Results · radcloud`;
  }

  function renderFiles(outputs) {
    const tbody = $("#files tbody");
    tbody.replaceChildren(...outputs.map((o) => el("tr", {},
      el("td", {}, o.name), el("td", {}, o.content_type || ""), el("td", { class: "num" }, fmt.bytes(o.size)),
      el("td", {}, o.shard || ""), el("td", {}, o.url ? el("a", { href: o.url, download: o.name.split("/").pop() }, "Download") : ""))));
    if (!outputs.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 5 }, "This job produced no files.")));
  }

  async function thumb(o) {
    if (thumbUrls[o.name]) return thumbUrls[o.name];
    try {
      const t = await api(`results/${encodeURIComponent(jobId)}/thumbnail`, { method: "GET", query: { name: o.name } });
      thumbUrls[o.name] = t.url;
    } catch (err) { thumbUrls[o.name] = o.url; }
    return thumbUrls[o.name];
  }

  /* Slice order from a plugin's index (dcm2png.json: images[{png, instance}]),
   * else by name: file names are often SOP UIDs, which say nothing of position. */
  async function sliceOrder(tables) {
    const order = {};
    for (const t of tables.filter((o) => /\.json$/i.test(o.name) && o.url && o.size < 2 * 1024 * 1024).slice(0, 20)) {
      try {
        const data = await (await fetch(t.url)).json();
        const dir = t.name.includes("/") ? t.name.slice(0, t.name.lastIndexOf("/") + 1) : "";
        for (const i of (data && data.images) || []) if (i.png) order[dir + i.png] = [Number(i.series) || 0, Number(i.instance) || 0, Number(i.frame) || 0];
      } catch (e) { /* not an index */ }
    }
    return order;
  }

  function renderThumbs(images, montages, order) {
    const box = $("#thumbs");
    box.replaceChildren();
    if (!images.length) { box.append(el("p", { class: "muted" }, "No images in these results.")); return; }
    const key = (o) => order[o.name] || null;
    images.sort((a, b) => {
      const ka = key(a), kb = key(b);
      if (ka && kb && (a.shard || "") === (b.shard || "")) return ka[0] - kb[0] || ka[1] - kb[1] || ka[2] - kb[2];
      return (a.shard || "").localeCompare(b.shard || "") || a.name.localeCompare(b.name, undefined, { numeric: true });
    });
    const shown = [...montages, ...images.slice(0, 120)];
    const buttons = shown.map((o) => {
      const img = el("img", { alt: o.name, loading: "lazy" });
      const isMontage = montages.includes(o);
      const b = el("button", { type: "button", class: isMontage ? "montage" : "slice", title: o.name, onclick: () => open(isMontage ? [o] : images, o) }, img,
        el("span", { class: "cap" }, isMontage ? `Overview ${o.name.split("/").pop()}` :
          key(o) ? `Image ${key(o)[1]}${key(o)[2] > 1 ? `.${key(o)[2]}` : ""}` : o.name.split("/").pop()));
      if (isMontage) thumbUrls[o.name] = o.url;
      return { b, img, o };
    });
    box.append(...buttons.map((x) => x.b));
    if (images.length > shown.length) box.append(el("p", { class: "muted" }, `${images.length - shown.length} more images: use the slice scroller.`));
    // At most 6 thumbnail requests at a time: fast first paint, no request storm.
    let next = 0;
    const worker = async () => { while (next < buttons.length) { const x = buttons[next++]; x.img.src = await thumb(x.o); } };
    for (let i = 0; i < 6; i++) worker();
  }

  function open(images, o) {
    stack = images.filter((i) => (i.series_uid || "") === (o.series_uid || "") && (i.shard || "") === (o.shard || ""));
    index = Math.max(0, stack.indexOf(o));
    const slider = $("#slice");
    slider.max = String(stack.length - 1);
    $("#viewer").hidden = false;
    show();
    canvas.focus();
  }

  function show() {
    const o = stack[index];
    if (!o) return;
    $("#slice").value = String(index);
    $("#slice-label").textContent = `Slice ${index + 1} of ${stack.length}`;
    const img = new Image();
    img.crossOrigin = "anonymous";
    img.onload = () => {
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      ctx.drawImage(img, 0, 0);
      try { raw = ctx.getImageData(0, 0, canvas.width, canvas.height); } catch (e) { raw = null; }
      applyWindow();
      canvas.dataset.loaded = o.name;
    };
    img.onerror = () => showError($("#view-error"), new Error("This image could not be loaded; its link may have expired. Reload the page."));
    img.src = o.url;
  }

  function applyWindow() {
    const o = stack[index] || {};
    canvas.style.filter = "";
    if (!windowPreset) { if (raw) ctx.putImageData(raw, 0, 0); return; }
    const [width, center] = windowPreset.split(",").map(Number);
    // Presets are in HU when the output says which HU range its grey levels
    // span (hu_range); otherwise in stored grey levels (0-255) of the image.
    const [hmin, hmax] = o.hu_range || [0, 255];
    const lo = center - width / 2;
    if (!raw) return; // pixels not readable (no CORS on the store): keep as stored
    const out = new ImageData(new Uint8ClampedArray(raw.data), raw.width, raw.height);
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = ((hmin + (v / 255) * (hmax - hmin) - lo) / width) * 255;
    for (let i = 0; i < out.data.length; i += 4) {
      out.data[i] = lut[out.data[i]]; out.data[i + 1] = lut[out.data[i + 1]]; out.data[i + 2] = lut[out.data[i + 2]];
    }
    ctx.putImageData(out, 0, 0);
  }

  $("#slice").addEventListener("input", (e) => { index = Number(e.target.value); show(); });
  canvas.addEventListener("keydown", (e) => {
    if (["ArrowUp", "ArrowRight", "PageDown"].includes(e.key)) { index = Math.min(stack.length - 1, index + 1); show(); e.preventDefault(); }
    if (["ArrowDown", "ArrowLeft", "PageUp"].includes(e.key)) { index = Math.max(0, index - 1); show(); e.preventDefault(); }
  });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); index = Math.max(0, Math.min(stack.length - 1, index + Math.sign(e.deltaY))); show(); }, { passive: false });
  $("#presets").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => {
    windowPreset = b.dataset.window;
    $("#presets").querySelectorAll("button").forEach((x) => x.setAttribute("aria-pressed", String(x === b)));
    applyWindow();
  }));

  async function renderTable(o) {
    if (!o.url || o.size > 2 * 1024 * 1024) return;
    let text;
    try { text = await (await fetch(o.url)).text(); } catch (e) { return; }
    let rows = [];
    if (/csv/.test(o.content_type || "") || /\.csv$/i.test(o.name)) {
      rows = text.trim().split(/\r?\n/).slice(0, 201).map((line) => line.split(","));
    } else {
      try {
        const data = JSON.parse(text);
        // An index object ({images: [{...}], ...}): tabulate its first list of records.
        const inner = !Array.isArray(data) && data && typeof data === "object" &&
          Object.values(data).find((v) => Array.isArray(v) && v.length && typeof v[0] === "object");
        const list = Array.isArray(data) ? data : inner || [data];
        const keys = [...new Set(list.flatMap((r) => (r && typeof r === "object" ? Object.keys(r) : ["value"])))].slice(0, 20);
        rows = [keys, ...list.slice(0, 200).map((r) => keys.map((k) => String(r && typeof r === "object" ? (typeof r[k] === "object" ? JSON.stringify(r[k]) : r[k] ?? "") : r).slice(0, 200)))];
      } catch (e) { return; }
    }
    if (!rows.length) return;
    $("#tables").append(el("h3", {}, o.name), el("table", { class: "data" },
      el("thead", {}, el("tr", {}, rows[0].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.slice(1).map((r) => el("tr", {}, r.map((c) => el("td", {}, c ?? "")))))));
  }

  load();
})();
