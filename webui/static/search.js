/* Search: a form → the query action; patients → studies → series, sortable, CSV. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, sortable, compare, csv, download, state, pageUrl, toast, derivedBadge } = window.RC;
  const form = $("#search-form");
  const tbody = $("#results tbody");
  let studies = [];            // query items (level study)
  const seriesOf = {};         // StudyInstanceUID -> series items (loaded on expand)
  const thumbOf = {};          // SeriesInstanceUID -> a data: URL of Orthanc's preview (query/previews)
  const openPatients = new Set();
  const openStudies = new Set();
  const chosen = new Set();    // selected StudyInstanceUIDs
  const chosenSeries = new Set(); // selected SeriesInstanceUIDs (when not the whole study)
  let sortKey = "date", sortDir = -1;

  // The reader's calendar day, not UTC's: "Today" just after midnight is today here.
  const iso = (d) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
  form.querySelectorAll("[data-preset]").forEach((b) => b.addEventListener("click", () => {
    const days = b.dataset.preset;
    if (days === "") { $("#date-from").value = ""; $("#date-to").value = ""; return; }
    const to = new Date(); const from = new Date();
    from.setDate(from.getDate() - Number(days));
    $("#date-from").value = iso(from);
    $("#date-to").value = days === "1" ? iso(from) : iso(to);
  }));

  /* What a clinician types → a DICOM PatientName match. Orthanc matches
   * person names ignoring case (CaseSensitivePN defaults to false), so the
   * one thing left is the prefix: "smith" finds SMITH^JOHN. "smith, jo"
   * means family name then given name(s). A value with * or ? is taken as
   * typed: the DICOM wildcards still work for those who use them. */
  function namePattern(text) {
    text = text.trim();
    if (!text || /[*?]/.test(text)) return text;
    return text.replace(/\s*,\s*/g, "^") + "*";
  }

  function buildQuery() {
    const q = { level: "study", limit: 1000 };
    const mrns = $("#mrn").value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
    if (mrns.length) q.PatientID = mrns.length === 1 ? mrns[0] : mrns;
    const name = namePattern($("#name").value); if (name) q.PatientName = name;
    const acc = $("#accession").value.trim(); if (acc) q.AccessionNumber = acc;
    const from = $("#date-from").value, to = $("#date-to").value;
    if (from || to) q.StudyDate = { ...(from ? { from } : {}), ...(to ? { to } : {}) };
    const mod = $("#modality").value; if (mod) q.ModalitiesInStudy = mod;
    const desc = $("#description").value.trim(); if (desc) q.StudyDescription = desc;
    return q;
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  async function search() {
    const button = $("#search-btn");
    button.disabled = true;
    showError($("#search-error"), null);
    $("#search-time").textContent = "Searching…";
    const t0 = performance.now();
    try {
      const res = await api("query", { body: buildQuery() });
      studies = (res && (res.items || res.results)) || [];
      chosen.clear(); chosenSeries.clear(); openStudies.clear(); openPatients.clear();
      const patients = new Set(studies.map((s) => s.PatientID));
      if (patients.size <= 10) patients.forEach((p) => openPatients.add(p));
      const ms = Math.round(performance.now() - t0);
      $("#search-time").textContent = `in ${ms} ms`;
      $("#search-time").dataset.ms = String(ms);
      $("#result-count").textContent = `(${studies.length} ${studies.length === 1 ? "study" : "studies"}, ` +
        `${patients.size} ${patients.size === 1 ? "patient" : "patients"}${res && res.truncated ? ", more not shown: narrow the search" : ""})`;
      render();
    } catch (err) {
      $("#search-time").textContent = "";
      showError($("#search-error"), err);
    } finally {
      button.disabled = false;
    }
  }
  // Focus now, not in a timeout: a deferred focus could land after the user
  // (or a test) has started typing in another field and steal the keystrokes.
  form.addEventListener("reset", () => $("#mrn").focus());
  // Enter in the MRN box searches, as in every other field; Shift+Enter starts a new line.
  $("#mrn").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });
  // Arriving from Home's "Find a patient" or a login (?mrn= or ?name=): search at once, and only
  // then focus (a focus lays the page out first: the request need not wait for that).
  const asked = new URLSearchParams(location.search);
  if (asked.get("mrn") || asked.get("name")) {
    $("#mrn").value = asked.get("mrn") || "";
    $("#name").value = asked.get("name") || "";
    window.RC.firstScreen(search());
  }
  $("#mrn").focus();

  const studyValue = {
    patient: (s) => fmt.name(s.PatientName), mrn: (s) => s.PatientID || "", date: (s) => s.StudyDate || "",
    modalities: (s) => (s.ModalitiesInStudy || []).join ? (s.ModalitiesInStudy || []).join("/") : s.ModalitiesInStudy,
    description: (s) => s.StudyDescription || "", accession: (s) => s.AccessionNumber || "",
    series: (s) => Number(s.NumberOfStudyRelatedSeries) || 0, instances: (s) => Number(s.NumberOfStudyRelatedInstances) || 0,
  };
  sortable($("#results"), (k, dir) => { sortKey = k; sortDir = dir; render(); });

  function groups() {
    const byPatient = new Map();
    for (const s of studies) {
      const key = s.PatientID || "(no MRN)";
      if (!byPatient.has(key)) byPatient.set(key, []);
      byPatient.get(key).push(s);
    }
    const cmp = (a, b) => sortDir * compare(studyValue[sortKey](a), studyValue[sortKey](b));
    const list = [...byPatient.entries()].map(([mrn, ss]) => ({ mrn, studies: ss.sort(cmp) }));
    list.sort((a, b) => cmp(a.studies[0], b.studies[0]));
    return list;
  }

  function toggle(label, open, onclick, title) {
    return el("button", { type: "button", "aria-expanded": open ? "true" : "false", onclick, title }, open ? "▾ " : "▸ ", label);
  }

  function render() {
    tbody.replaceChildren();
    if (!studies.length) {
      tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 9 }, "No studies match. Check the MRN or widen the dates.")));
    }
    for (const g of groups()) {
      const first = g.studies[0];
      const open = openPatients.has(g.mrn);
      const nSeries = g.studies.reduce((n, s) => n + studyValue.series(s), 0);
      const nInst = g.studies.reduce((n, s) => n + studyValue.instances(s), 0);
      const allChosen = g.studies.every((s) => chosen.has(s.StudyInstanceUID));
      tbody.append(el("tr", { class: "patient" },
        el("td", {}, el("input", { type: "checkbox", "aria-label": "Select all studies of this patient", checked: allChosen,
          onchange: (e) => { g.studies.forEach((s) => e.target.checked ? chosen.add(s.StudyInstanceUID) : chosen.delete(s.StudyInstanceUID)); render(); } })),
        el("td", {}, toggle(fmt.name(first.PatientName) || "(no name)", open, () => { open ? openPatients.delete(g.mrn) : openPatients.add(g.mrn); render(); })),
        el("td", { class: "mrn" }, g.mrn), el("td", { class: "muted nowrap" }, `${g.studies.length} ${g.studies.length === 1 ? "study" : "studies"}`),
        el("td", { colspan: 3, class: "wide-only" }), el("td", { class: "num wide-only" }, nSeries), el("td", { class: "num wide-only" }, nInst)));
      if (!open) continue;
      for (const s of g.studies) renderStudy(s);
    }
    const any = chosen.size + chosenSeries.size > 0;
    $("#pull-btn").disabled = !any;
    $("#pull-btn").textContent = any ? `Pull selected (${chosen.size} studies${chosenSeries.size ? `, ${chosenSeries.size} series` : ""})` : "Pull selected";
    $("#csv-btn").disabled = !studies.length;
    $("#select-all").checked = studies.length > 0 && studies.every((s) => chosen.has(s.StudyInstanceUID));
  }

  function renderStudy(s) {
    const uid = s.StudyInstanceUID;
    const open = openStudies.has(uid);
    tbody.append(el("tr", { class: "study" + (chosen.has(uid) ? " selected" : ""), dataset: { uid } },
      el("td", {}, el("input", { type: "checkbox", "aria-label": `Select study of ${fmt.date(s.StudyDate)} ${s.StudyDescription || ""}`,
        checked: chosen.has(uid), onchange: (e) => { e.target.checked ? chosen.add(uid) : chosen.delete(uid); render(); } })),
      el("td", {}, toggle(s.StudyDescription || "Study", open, () => expandStudy(uid), "Show series")),
      el("td", { class: "mrn" }, s.PatientID || ""), el("td", { class: "nowrap" }, fmt.date(s.StudyDate)),
      el("td", { class: "wide-only" }, studyValue.modalities(s)), el("td", { class: "wide-only" }, s.StudyDescription || ""),
      el("td", { class: "wide-only" }, s.AccessionNumber || ""),
      el("td", { class: "num wide-only" }, studyValue.series(s)), el("td", { class: "num wide-only" }, studyValue.instances(s))));
    if (!open) return;
    const series = seriesOf[uid];
    if (!series) {
      tbody.append(el("tr", { class: "series" }, el("td", {}), el("td", { colspan: 8, class: "muted" }, "Loading series…")));
      return;
    }
    if (series.error) {
      tbody.append(el("tr", { class: "series" }, el("td", {}), el("td", { colspan: 8, class: "error" }, series.error)));
      return;
    }
    for (const se of series) {
      const suid = se.SeriesInstanceUID;
      // A chosen study brings its acquired series; radcloud's own results only when ticked (retrieve
      // leaves them out of a whole study: they are not source images).
      const withStudy = chosen.has(uid) && !se.derived;
      tbody.append(el("tr", { class: "series" + (se.derived ? " derived" : ""), dataset: { series: suid } },
        el("td", {}, el("input", { type: "checkbox", "aria-label": `Select series ${se.SeriesNumber || ""} ${se.SeriesDescription || ""}`,
          checked: withStudy || chosenSeries.has(suid), disabled: withStudy,
          onchange: (e) => { e.target.checked ? chosenSeries.add(suid) : chosenSeries.delete(suid); render(); } })),
        el("td", {}, thumbOf[suid] ? el("img", { class: "series-thumb", src: thumbOf[suid], alt: "", width: 48, height: 48 }) : "",
          el("span", { class: "series-no" }, `Series ${se.SeriesNumber ?? ""}`),
          // what the hidden columns say, on a phone (app.css: .wide-only, .phone-only): never a result taken for an image
          el("span", { class: "sub phone-only" }, [se.Modality, se.SeriesDescription].filter(Boolean).join(" "), se.derived ? " " : "", derivedBadge(se))),
        el("td", {}), el("td", {}, fmt.date(se.SeriesDate)),
        el("td", { class: "wide-only" }, se.Modality || ""),
        el("td", { class: "wide-only" }, se.SeriesDescription || "", se.BodyPartExamined ? el("span", { class: "muted body-part" }, ` · ${se.BodyPartExamined}`) : "",
          se.derived ? " " : "", derivedBadge(se)),
        el("td", { class: "wide-only" }), el("td", { class: "wide-only" }), el("td", { class: "num wide-only" }, se.NumberOfSeriesRelatedInstances ?? "")));
    }
  }

  async function expandStudy(uid) {
    if (openStudies.has(uid)) { openStudies.delete(uid); render(); return; }
    openStudies.add(uid);
    render();
    if (seriesOf[uid] && !seriesOf[uid].error) return;
    try {
      const res = await api("query", { body: { level: "series", StudyInstanceUID: uid, limit: 1000 } });
      seriesOf[uid] = (res.items || res.results || []).sort((a, b) => compare(Number(a.SeriesNumber) || 0, Number(b.SeriesNumber) || 0));
    } catch (err) {
      seriesOf[uid] = { error: err.message };
    }
    render();
    // Thumbnails come after the rows: what each series looks like, from the PACS's own rendering.
    if (Array.isArray(seriesOf[uid]) && seriesOf[uid].some((se) => se.orthanc)) {
      try {
        const res = await api("query/previews", { method: "GET", query: { StudyInstanceUID: uid } });
        for (const p of res.series || []) if (p.thumbnail && p.SeriesInstanceUID) thumbOf[p.SeriesInstanceUID] = p.thumbnail;
        render();
      } catch (err) { /* thumbnails are a help: the rows still name every series */ }
    }
  }

  $("#select-all").addEventListener("change", (e) => {
    studies.forEach((s) => e.target.checked ? chosen.add(s.StudyInstanceUID) : chosen.delete(s.StudyInstanceUID));
    render();
  });

  $("#csv-btn").addEventListener("click", () => {
    const rows = [["PatientName", "PatientID", "StudyDate", "Modalities", "StudyDescription", "AccessionNumber",
                   "Series", "Instances", "StudyInstanceUID"]];
    for (const g of groups()) for (const s of g.studies)
      rows.push([fmt.name(s.PatientName), s.PatientID, s.StudyDate, studyValue.modalities(s), s.StudyDescription,
                 s.AccessionNumber, studyValue.series(s), studyValue.instances(s), s.StudyInstanceUID]);
    download(`radcloud-search-${new Date().toISOString().slice(0, 10)}.csv`, csv(rows));
    toast("CSV downloaded.");
  });

  $("#pull-btn").addEventListener("click", () => {
    const pick = studies.filter((s) => chosen.has(s.StudyInstanceUID));
    const series = [];
    for (const [study, list] of Object.entries(seriesOf)) {
      if (!Array.isArray(list)) continue;
      for (const se of list) if (chosenSeries.has(se.SeriesInstanceUID) && (!chosen.has(study) || se.derived))
        series.push({ ...se, StudyInstanceUID: study, _study: studies.find((s) => s.StudyInstanceUID === study) });
    }
    state.set("selection", { studies: pick, series, at: Date.now() });
    state.set("pull", null);
    location.href = pageUrl("pull");
  });
})();
