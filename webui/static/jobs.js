/* Jobs: the list, and one job live (long-poll on the status action):
 * per-part progress (a part is a shard: one series), elapsed time, reasons,
 * the technical log behind a disclosure, cancel/retry. Words: words.js. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, pageUrl, toast, retry, words, stateBadge, FINAL } = window.RC;
  const tbody = $("#jobs tbody");
  const detail = $("#job-detail");
  // The list's compact form (app.css, #jobs.compact) on a phone and beside an open job, where
  // all eight columns would scroll sideways in their box.
  const phone = matchMedia("(max-width: 600px)");
  const compact = () => $("#jobs").classList.toggle("compact", phone.matches || !detail.hidden);
  phone.addEventListener("change", compact);
  compact();
  let selected = new URLSearchParams(location.search).get("job");
  let job = null;
  let pollCtl = null;
  let listTimer = null;

  const elapsed = (j) => {
    const start = Number(j.started_at || j.created_at || 0);
    if (!start) return "";
    const end = Number(j.finished_at || 0) || (FINAL.includes(j.state) ? Number(j.updated_at || 0) : 0) || Date.now() / 1000;
    return fmt.duration(end - start);
  };
  const pct = (a, b) => (b ? Math.round((100 * a) / b) : 0);
  // "Finished" counts every outcome; say which, so a cancelled job does not read as done.
  const shardSummary = (j, p) => {
    const outcomes = [["succeeded", j.shards_succeeded], ["failed", j.shards_failed], ["cancelled", j.shards_cancelled]]
      .filter(([, n]) => Number(n) > 0).map(([name, n]) => `${n} ${words.state(name).toLowerCase()}`);
    return `${p.shards_done ?? 0} of ${p.shards_total ?? 0} ${words.parts} done` + (outcomes.length ? ` (${outcomes.join(", ")})` : "");
  };

  // The list refreshes by itself: every LIST_MS, and every LIST_MOVING_MS while a job it lists has
  // not ended (a job started elsewhere, by a rule or the CLI, is seen to finish without a click).
  const LIST_MS = 5000, LIST_MOVING_MS = 2000;
  async function loadList() {
    clearTimeout(listTimer);
    let moving = false;
    try {
      const res = await api("status", { method: "GET", query: { state: $("#job-filter").value, limit: 50 } });
      renderList(res.jobs || []);
      moving = (res.jobs || []).some((j) => !FINAL.includes(j.state));
      showError($("#jobs-error"), null);
    } catch (err) { showError($("#jobs-error"), err); }
    listTimer = setTimeout(loadList, moving ? LIST_MOVING_MS : LIST_MS);
  }

  // Patient and study cells: who first (name, MRN under it), then which study.
  const patientCell = (s) => {
    const p = (s && s.patients || [])[0];
    if (!p) return el("td", { class: "patient muted" }, "Patient not recorded");
    const more = s.patients.length > 1 ? ` +${s.patients.length - 1}` : "";
    return el("td", { class: "patient" }, fmt.name(p.PatientName) + more, el("span", { class: "sub mrn" }, p.PatientID || ""));
  };
  // The plugin also under the study: a phone hides the Plugin column (app.css) and shows it there.
  const studyCell = (s, plugin) => {
    const st = (s && s.studies || [])[0];
    return el("td", { class: "study" }, st ? [st.StudyDescription || "", el("span", { class: "sub" }, fmt.date(st.StudyDate))] : "",
      plugin ? el("span", { class: "sub plugin-sub" }, plugin) : "");
  };
  let allJobs = [];
  const findText = () => $("#job-find").value.trim().toLowerCase();

  function renderList(jobs) {
    allJobs = jobs;
    tbody.replaceChildren();
    const terms = findText().split(/\s+/).filter(Boolean);
    const shown = terms.length ? jobs.filter((j) => {
      const text = `${RC.subjectText(j.subject)} ${j.plugin || ""} ${j.id}`.toLowerCase();
      return terms.every((w) => text.includes(w));
    }) : jobs;
    if (!jobs.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 8 }, "No jobs yet. Start one on the Run page.")));
    else if (!shown.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 8 }, `No job matches "${findText()}".`)));
    for (const j of shown) {
      const p = j.progress || {};
      tbody.append(el("tr", { class: "clickable" + (j.id === selected ? " selected" : ""), tabindex: 0, dataset: { job: j.id },
                               onclick: () => select(j.id), onkeydown: (e) => { if (e.key === "Enter") select(j.id); } },
        patientCell(j.subject), studyCell(j.subject, j.plugin), el("td", {}, j.plugin || ""),
        el("td", {}, stateBadge(j.state), j.cached ? el("span", { class: "badge cached" }, words.cached) : ""),
        el("td", {}, `${p.shards_done ?? 0}/${p.shards_total ?? 0} ${words.parts}`),
        el("td", { class: "when" }, fmt.when(j.started_at || j.created_at)), el("td", {}, elapsed(j)),
        el("td", {}, el("code", {}, j.id.slice(0, 12)))));
    }
  }

  function select(id) {
    selected = id;
    history.replaceState(null, "", pageUrl("jobs", { job: id }));
    tbody.querySelectorAll("tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.job === id));
    watch(id);
  }

  async function watch(id) {
    if (pollCtl) pollCtl.abort();
    const ctl = new AbortController();
    pollCtl = ctl;
    job = null;
    let since = null;
    for (let i = 0; i < 10000 && !ctl.signal.aborted; i++) {  // bounded; each turn waits ≤ 20 s
      try {
        // Offer to long-poll; the server blocks only while it has a watch lease free
        // and otherwise answers at once, saying when to ask again (docs/jobs.md).
        const query = since === null ? {} : { wait: 20, since };
        const j = await api(`status/${encodeURIComponent(id)}`, { method: "GET", query, signal: ctl.signal });
        job = j; since = j.version;
        renderDetail(j);
        $("#live").textContent = FINAL.includes(j.state) ? "" : "Live";
        if (FINAL.includes(j.state)) { loadList(); break; }
        await retry.sleep((j.poll_after_ms || 0) * (0.8 + 0.4 * Math.random()), ctl.signal);
      } catch (err) {
        if (err.name === "AbortError") return;
        showError($("#jobs-error"), err);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  const FINAL_SHARD = ["succeeded", "failed", "cancelled"];
  // Which executor ran a shard and its id there: "Slurm job 42", "action 3f2a…" (the CLI says the same).
  const executorLabel = (s) => {
    if (!s.executor) return "";
    const handle = String(s.activation_id || "");
    if (s.executor === "slurm") return handle ? `Slurm job ${handle}` : "Slurm";
    return handle ? `${s.executor} ${handle.slice(0, 12)}` : s.executor;
  };

  // "Send results back to the PACS": what the PACS now holds, or why it holds nothing (the results stand).
  const pacsNote = (j) => j.pacs_error ? el("p", { class: "error", id: "job-pacs" }, j.pacs_error)
    : Number(j.pacs_instances) > 0 ? el("p", { class: "muted", id: "job-pacs" },
      `Sent to the PACS: ${j.pacs_instances} object(s), in the study the images came from.`) : "";

  // A pipeline's parts are its steps, each run by a job of its own: name the plugin, link the job.
  function partCell(j, s) {
    const step = (j.steps || []).find((t) => t.id === s.id);
    if (!step) return s.id;
    const label = `Step ${step.step}: ${step.plugin}`;
    return step.job ? el("a", { href: pageUrl("jobs", { job: step.job }), class: "step-job" }, label) : label;
  }

  function renderDetail(j) {
    detail.hidden = false;
    compact();
    const p = j.progress || {};
    const final = FINAL.includes(j.state);
    const shards = j.shards || [];
    const failed = shards.filter((s) => s.state === "failed");
    detail.replaceChildren(
      RC.identity(j.subject),
      el("div", { class: "bar" }, el("h2", {}, `${j.plugin || "Job"} `, el("code", {}, j.id.slice(0, 12))),
        stateBadge(j.state, { id: "job-state" }),
        j.cached ? el("span", { class: "badge cached", title: "Same plugin, parameters and images as an earlier job: its results are reused." }, words.cached) : ""),
      el("p", { class: "muted", id: "job-elapsed" }, `Elapsed: ${elapsed(j)}`),
      el("div", { class: "progress" + (j.state === "succeeded" ? " done" : ["failed", "partial"].includes(j.state) ? " failed" : ""),
                  role: "progressbar", "aria-valuemin": 0, "aria-valuemax": p.shards_total || 0, "aria-valuenow": p.shards_done || 0,
                  "aria-label": "Job progress" },
        el("span", { style: `width:${final && j.state === "succeeded" ? 100 : pct(p.shards_done, p.shards_total)}%` })),
      el("p", { id: "job-shards" }, shardSummary(j, p) +
        (p.instances_total ? ` · ${p.instances_done}/${p.instances_total} images` : "")),
      // The reason in plain words (radcloud/work/reasons.py); the recorded, technical one behind "Technical details".
      j.reason ? el("p", { class: final && j.state !== "succeeded" ? "error" : "muted", id: "job-reason" }, j.reason_plain || j.reason) : "",
      j.reason && j.reason_plain && j.reason_plain !== j.reason ?
        el("details", { class: "technical", id: "job-reason-details" }, el("summary", {}, words.details), el("p", { class: "muted" }, j.reason)) : "",
      pacsNote(j),
      el("div", { class: "bar" },
        !final ? el("button", { type: "button", onclick: () => act("cancel") }, "Cancel") : "",
        ["failed", "partial"].includes(j.state) ? el("button", { type: "button", class: "retry", onclick: () => act("retry") },
          j.steps ? words.retrySteps : words.retryParts) : "",
        ["succeeded", "partial"].includes(j.state) ? el("a", { class: "button primary", href: pageUrl("view", { job: j.id }), id: "view-results" }, "View results") : ""),
      el("div", { class: "table-wrap" }, el("table", { class: "data stack" },
        el("thead", {}, el("tr", {}, ["Part", "State", "Runs on", "Progress", "Time", "Why"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, shards.map((s) => el("tr", {},
          el("td", {}, partCell(j, s)), el("td", { dataset: { label: "State" } }, stateBadge(s.state),
            s.warnings ? el("span", { class: "badge warn", title: "input files the plugin did not process; see the reason" }, ` ${s.warnings} file warning(s)`) : "",
            // what a running part does: "fetching 5 inputs", then "running the plugin" (radcloud/work/jobview.py)
            s.phase_plain ? el("div", { class: "muted phase" }, s.phase_plain) : ""),
          el("td", { class: "executor", dataset: { label: "Runs on" } }, executorLabel(s),
            // which run this is: "requeued by Slurm, attempt 2" (radcloud/work/jobview.py), nothing for a first
            s.attempt_plain ? el("div", { class: "muted attempt" }, s.attempt_plain) : "",
            s.queue_reason && !FINAL_SHARD.includes(s.state) ? el("div", { class: "muted queue-reason" }, s.queue_reason) : ""),
          el("td", { dataset: { label: "Progress" } }, s.instances_total ? `${s.instances_done || 0}/${s.instances_total}` : ""),
          el("td", { dataset: { label: "Time" } }, s.started_at ? fmt.duration((Number(s.finished_at) || Date.now() / 1000) - Number(s.started_at)) : ""),
          el("td", { class: "why", title: s.reason || "", dataset: { label: "Why" } }, s.reason_plain || s.reason || "")))))),
      // The technical detail (the program's exit code and the end of its log) behind a disclosure;
      // the failed parts' open, since they say why.
      ...shards.filter((s) => s.stderr_tail || (s.exit_code !== undefined && s.exit_code !== null) || (s.reason && s.reason !== s.reason_plain)).slice(0, 20).map((s) =>
        el("details", { open: failed.includes(s), class: "technical" },
          el("summary", {}, `${words.technicalLog}: ${words.part} ${s.id} (${words.state(s.state).toLowerCase()})`),
          s.reason && s.reason !== s.reason_plain ? el("p", { class: "muted reason-technical" }, s.reason) : "",
          s.exit_code !== undefined && s.exit_code !== null ? el("p", { class: "muted" }, `${words.exitCode} ${s.exit_code}`) : "",
          s.stderr_tail ? el("pre", { class: "log" }, s.stderr_tail) : "")));
  }

  async function act(what) {
    if (!job) return;
    try {
      await api(`status/${encodeURIComponent(job.id)}/${what}`, { method: "POST", body: {} });
      toast(what === "cancel" ? "Cancel requested." : job.steps ? words.stepsRestarted : words.partsRestarted);
      watch(job.id);
    } catch (err) { showError($("#jobs-error"), err); }
  }

  // The elapsed time ticks while a job runs, without a request per second.
  setInterval(() => { if (job && !FINAL.includes(job.state)) { const n = $("#job-elapsed"); if (n) n.textContent = `Elapsed: ${elapsed(job)}`; } }, 1000);
  for (const o of $("#job-filter").options) if (o.value) o.textContent = words.state(o.value);
  $("#job-filter").addEventListener("change", loadList);
  $("#job-find").addEventListener("input", () => renderList(allJobs));
  loadList();
  if (selected) watch(selected);
})();
