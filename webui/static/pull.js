/* Pull: stage the selected studies/series into radcloud's storage, with a
 * live bar per series (instances n/N), plain-words errors and retry. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, state, pageUrl, derivedBadge, stateBadge } = window.RC;
  const selection = state.get("selection", { studies: [], series: [] });
  const list = $("#pull-list");
  const startBtn = $("#start-pull");
  let pull = state.get("pull", null);   // {retrieve_id, status}
  let timer = null;

  const studyLabel = (s) => `${fmt.name(s.PatientName) || "(no name)"} · ${s.PatientID || ""} · ${fmt.date(s.StudyDate)} · ${s.StudyDescription || "study"}`;
  const nStudies = selection.studies.length, nSeries = selection.series.length;
  if (nStudies + nSeries) {
    $("#pull-summary").textContent = `${nStudies} ${nStudies === 1 ? "study" : "studies"}` +
      (nSeries ? ` and ${nSeries} series` : "") + " selected.";
    startBtn.disabled = false;
  }
  const known = {};  // SeriesInstanceUID -> label
  const derivedUids = new Set();  // radcloud's own result series: badged
  selection.series.forEach((se) => {
    known[se.SeriesInstanceUID] = `Series ${se.SeriesNumber ?? ""} ${se.SeriesDescription || ""}`;
    if (se.derived) derivedUids.add(se.SeriesInstanceUID);
  });
  const seriesName = (s) => [known[s.SeriesInstanceUID] || `Series …${s.SeriesInstanceUID.slice(-8)}`,
    derivedUids.has(s.SeriesInstanceUID) ? " " : "", derivedBadge({ derived: derivedUids.has(s.SeriesInstanceUID) })];

  function plain(err) {
    const text = typeof err === "string" ? err : (err && (err.message || err.reason || err.error)) || "";
    if (/timed? ?out/i.test(text)) return "The PACS took too long to answer. Retry; if it keeps failing, the PACS may be overloaded.";
    if (/unreachable|connection|refused/i.test(text)) return "The PACS could not be reached. Retry in a minute.";
    if (/not found|unknown|has no/i.test(text)) return "The PACS no longer has these images (or the identifier is wrong).";
    if (/md5|checksum/i.test(text)) return "An image arrived damaged. Retry to copy it again.";
    return text || "This series could not be copied. Retry.";
  }

  function renderPlan() {
    list.replaceChildren();
    for (const s of selection.studies) list.append(el("div", { class: "card pull-item" }, el("strong", {}, studyLabel(s)),
      el("div", { class: "muted" }, `${s.NumberOfStudyRelatedSeries ?? "?"} series, ${s.NumberOfStudyRelatedInstances ?? "?"} images`)));
    for (const se of selection.series) list.append(el("div", { class: "card pull-item" },
      el("strong", {}, se._study ? studyLabel(se._study) : "Study"), el("div", {}, ...seriesName(se))));
  }

  function renderStatus(st) {
    list.replaceChildren();
    const card = el("div", { class: "card pull-item" });
    // A series whose every image was stored already (same key and MD5) copied nothing: say so.
    const already = (s) => s.state === "succeeded" && s.total > 0 && (s.skipped || 0) >= s.total;
    const allAlready = (st.series || []).length && st.series.every(already);
    const skipped = (st.series || []).reduce((n, s) => n + (s.skipped || 0), 0);
    card.append(el("div", { class: "bar" }, el("strong", {}, "Overall"),
      stateBadge(st.state),
      el("span", { class: "muted" }, `${st.series_done}/${st.series_total} series · ${st.instances_done}/${st.instances_total} images · ` +
        (skipped ? `${fmt.bytes(st.bytes)} copied, ${skipped} images were already staged` : fmt.bytes(st.bytes)))));
    if (allAlready) card.append(el("p", { class: "note", id: "already-staged" },
      "Already staged: these images were pulled before and are unchanged, so nothing needed copying. You can run a plugin on them now."));
    const left = (pull && pull.skipped_derived) || 0;
    if (left) card.append(el("p", { class: "note", id: "derived-left-out" },
      `${left} result series that radcloud made earlier ${left === 1 ? "was" : "were"} left out: ` +
      "they are not images from the scanner. To pull one anyway, tick it under its study on the Search page."));
    for (const s of st.series || []) {
      const pct = s.total ? Math.round(100 * s.done / s.total) : (s.state === "succeeded" ? 100 : 0);
      const bad = ["failed", "stalled"].includes(s.state);
      const row = el("div", { class: "row", dataset: { series: s.SeriesInstanceUID, state: s.state } },
        s.state === "succeeded"  // staged: open its images in the viewer
          ? el("a", { href: window.RC.pageUrl("viewer", { series: s.SeriesInstanceUID }), title: "Open in the viewer" }, ...seriesName(s))
          : el("span", {}, ...seriesName(s)),
        el("div", { class: "progress" + (s.state === "succeeded" ? " done" : bad ? " failed" : ""), role: "progressbar",
                    "aria-valuemin": 0, "aria-valuemax": s.total || 0, "aria-valuenow": s.done,
                    "aria-label": `Series progress: ${s.done} of ${s.total} images` },
          el("span", { style: `width:${pct}%` })),
        el("span", { class: "count" }, `${s.done}/${s.total}`),
        already(s) ? el("span", { class: "state succeeded already" }, "Already staged") : stateBadge(s.state));
      card.append(row);
      if (bad || (s.errors && s.errors.length)) {
        const first = s.reason || (s.errors && s.errors[0]);
        card.append(el("div", { class: "row" }, el("span", {}),
          el("span", { class: "error" }, plain(first)),
          el("span", {}), bad ? el("button", { type: "button", onclick: retry }, "Retry") : ""));
      }
    }
    list.append(card);
    const finished = ["succeeded", "partial", "failed"].includes(st.state);
    $("#to-run").hidden = !(st.state === "succeeded" || st.state === "partial");
    if (finished) {
      const okSeries = (st.series || []).filter((s) => s.state === "succeeded").map((s) => s.SeriesInstanceUID);
      state.set("staged", { retrieve_id: st.retrieve_id, series: okSeries, studies: selection.studies, at: Date.now() });
    }
    return finished;
  }

  async function poll() {
    clearTimeout(timer);
    if (!pull) return;
    try {
      const st = await api("retrieve", { method: "GET", query: { retrieve_id: pull.retrieve_id } });
      showError($("#pull-error"), null);
      const finished = renderStatus(st);
      if (!finished) timer = setTimeout(poll, 400);
    } catch (err) {
      showError($("#pull-error"), err);
      timer = setTimeout(poll, 3000);
    }
  }

  async function start(body) {
    startBtn.disabled = true;
    showError($("#pull-error"), null);
    try {
      const res = await api("retrieve", { body });
      pull = { retrieve_id: res.retrieve_id, body: { ...body, retrieve_id: undefined }, skipped_derived: res.skipped_derived || 0 };
      state.set("pull", pull);
      if (Array.isArray(res.series)) renderStatus(res);
      poll();
    } catch (err) {
      // Plain words first, the server's own message after (it names the input).
      const said = (err && err.message) || String(err);
      const words = plain(said);
      showError($("#pull-error"), words === said ? err : { message: `${words} (${said})` });
      startBtn.disabled = false;
    }
  }

  function retry() {
    // A new retrieve of the same request: it skips what is already staged
    // (same MD5) and finishes the rest, so retrying the whole request is
    // cheap. Never send the old retrieve_id: the action answers a call that
    // carries one with that retrieve's status, so nothing would rerun.
    if (pull && pull.body) start({ ...pull.body });
  }

  startBtn.addEventListener("click", () => {
    const body = {};
    if (selection.studies.length) body.StudyInstanceUID = selection.studies.map((s) => s.StudyInstanceUID);
    if (selection.series.length) body.SeriesInstanceUID = selection.series.map((s) => s.SeriesInstanceUID);
    start(body);
  });
  $("#to-run").href = pageUrl("run");

  // Name the series (number, description, modality) rather than show UIDs.
  async function labelSeries() {
    const uids = selection.studies.map((s) => s.StudyInstanceUID);
    if (!uids.length) return;
    try {
      const res = await api("query", { body: { level: "series", StudyInstanceUID: uids.length === 1 ? uids[0] : uids, limit: 1000 } });
      for (const se of res.items || []) {
        known[se.SeriesInstanceUID] = `Series ${se.SeriesNumber ?? ""} · ${se.SeriesDescription || se.Modality || ""}` +
          (se.NumberOfSeriesRelatedInstances ? ` (${se.NumberOfSeriesRelatedInstances} images)` : "");
        if (se.derived) derivedUids.add(se.SeriesInstanceUID);
      }
    } catch (err) { /* labels are a nicety: UIDs still identify the rows */ }
  }

  if (pull && pull.retrieve_id) { startBtn.disabled = true; poll(); } else renderPlan();
  labelSeries();
})();
