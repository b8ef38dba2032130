/* Home: the first screen — find a patient, my recent jobs, my staged studies and the
 * studies the PACS received last (whatever date the scan carries: demo and migrated
 * studies are years old), each box loading on its own (a slow one never holds up the others). */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, pageUrl, stateBadge, words, firstScreen } = window.RC;

  // One box: "Loading…" until its answer, then rows, or a plain sentence when empty or failed.
  async function fill(id, load, row, empty) {
    const box = $(id);
    try {
      const items = await load();
      box.replaceChildren(items.length ? el("ul", { class: "home-list" }, items.map((i) => el("li", {}, row(i))))
                                       : el("p", { class: "muted empty" }, empty));
    } catch (err) {
      const p = el("p", { class: "error", role: "alert" });
      box.replaceChildren(p);
      showError(p, err);
    } finally { box.setAttribute("aria-busy", "false"); }
  }
  const who = (p) => [el("strong", {}, fmt.name(p && p.PatientName) || "(no name)"), " ", el("span", { class: "mrn" }, (p && p.PatientID) || "")];

  // A query with a digit is an MRN; anything else a name (the Search page makes it forgiving).
  $("#home-find").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("#mrn").value.trim();
    if (!q) { $("#mrn").focus(); return; }
    location.href = pageUrl("search", /\d/.test(q) ? { mrn: q } : { name: q });
  });
  $("#mrn").focus();

  firstScreen(fill("#home-jobs", async () => ((await api("status", { method: "GET", query: { mine: true, limit: 5 } })).jobs || []),
    (j) => {
      const p = ((j.subject && j.subject.patients) || [])[0], st = ((j.subject && j.subject.studies) || [])[0];
      return el("a", { href: pageUrl("jobs", { job: j.id }), class: "home-item" },
        p ? who(p) : el("span", { class: "muted" }, "Patient not recorded"),
        el("span", { class: "sub" }, [j.plugin || "", st ? `${fmt.date(st.StudyDate)} ${st.StudyDescription || ""}` : ""].filter(Boolean).join(" · ")),
        " ", stateBadge(j.state), j.cached ? el("span", { class: "badge cached" }, words.cached) : "");
    }, "No jobs yet: pull a study, then run a plugin on it."));

  firstScreen(fill("#home-staged", async () => ((await api("retrieve/staged", { method: "GET" })).studies || []).slice(0, 5),
    (s) => el("a", { href: pageUrl("run"), class: "home-item" }, who(s),
      el("span", { class: "sub" }, `${fmt.date(s.StudyDate)} ${s.StudyDescription || ""} · ${s.series.length} series, ${fmt.bytes(s.bytes)}`)),
    "Nothing is staged yet: find a patient and pull a study."));

  // "Recent" is when the PACS received it (Orthanc's own arrival time, `recent` in the query API), not the
  // StudyDate: a study scanned last year and sent today is what a clinician expects to see here.
  firstScreen(fill("#home-recent", async () => ((await api("query", { body: { level: "study", recent: true, limit: 10 } })).items || []),
    (s) => el("a", { href: pageUrl("search", { mrn: s.PatientID || "" }), class: "home-item" }, who(s),
      el("span", { class: "sub" }, `${fmt.date(s.StudyDate)} ${(s.ModalitiesInStudy || []).join("/")} ${s.StudyDescription || ""}`),
      s.received_at ? el("span", { class: "sub received", title: `received by the PACS (${fmt.zone()})` }, `received ${fmt.when(s.received_at)}`) : ""),
    "The PACS holds no study yet."));
})();
