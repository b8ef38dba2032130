/* Automations (admins): routing rules — created, edited, switched on/off at once, deleted, run
 * now — the runs they started with each pipeline step's state, and the arrivals waiting to be
 * routed. Reads and writes the `routing` web action only (plus the plugin list for the step
 * choices); the server validates a rule when it is saved (radcloud.arrivals.rules.validate)
 * and its refusal, naming the field, is shown in the form. */
(function () {
  "use strict";
  const { $, el, api, cfg, token, fmt, showError, toast, pageUrl, words, stateBadge, FINAL } = window.RC;
  const MATCH_KEYS = ["modality", "body_part", "series_description", "study_description", "calling_aet"];
  let plugins = [], runRule = null;
  $("#runs-zone").textContent = fmt.zone();

  function matchText(match) {
    const parts = Object.entries(match || {}).map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`);
    return parts.length ? parts.join(", ") : "every series";
  }

  function ruleRow(rule) {
    const on = rule.enabled !== false;
    const button = el("button", { type: "button", class: "toggle", "data-rule": rule.name,
                                  "aria-label": `${on ? "Disable" : "Enable"} rule ${rule.name}` }, on ? "Disable" : "Enable");
    button.addEventListener("click", () => setEnabled(rule.name, !on, button));
    const action = (cls, label, fn) => el("button", { type: "button", class: cls, "aria-label": `${label} rule ${rule.name}`,
                                                      onclick: fn }, label);
    return el("tr", { "data-rule": rule.name, class: on ? "" : "off" },
      el("td", {}, rule.name, rule.description ? el("div", { class: "muted" }, rule.description) : ""),
      // data-label: the column's name, shown before each value where a phone stacks a row's cells
      el("td", { dataset: { label: "Matches" } }, matchText(rule.match)),
      el("td", { dataset: { label: "Pipeline" } }, (rule.pipeline || []).map((s, i) => `${i + 1}. ${s.plugin}${s.options && s.options.push_to_pacs ? " → PACS" : ""}`).join("  ")),
      el("td", { class: "state", dataset: { label: "State" } }, on ? "on" : "off"),
      el("td", { class: "actions" }, button, " ", action("edit", "Edit", () => openEditor(rule)), " ",
         action("run-now", "Run now", () => openRun(rule)), " ", action("delete", "Delete", (e) => remove(rule, e.target))));
  }

  function pendingRow(p) {
    return el("tr", { "data-arrival": p.arrival_id },
      el("td", { class: "uid", title: `arrival ${p.arrival_id}` }, p.study_uid || p.arrival_id),
      el("td", { dataset: { label: "Attempts" } }, String(p.attempts)),
      el("td", { title: p.next_at ? new Date(p.next_at * 1000).toISOString() : "", dataset: { label: "Next try" } },
         p.due_in_s > 0.5 ? `${fmt.when(p.next_at)} (in ${Math.round(p.due_in_s)} s)` : "now"),
      el("td", { dataset: { label: "Why it waits" } }, p.summary || "", p.reason ? reasonBox(p.reason_plain, p.reason, "Last reason: ") : ""));
  }

  // -- the rule editor: match globs and ordered steps; saved as {rule} (validated by the server) --
  function stepItem(step) {
    step = step || { plugin: plugins.length ? plugins[0].name : "", params: {}, options: {} };
    const choice = el("select", { class: "step-plugin", "aria-label": "Plugin" },
      ...plugins.map((p) => el("option", { value: p.name }, p.title ? `${p.title} (${p.name})` : p.name)));
    if (step.plugin && !plugins.some((p) => p.name === step.plugin)) choice.append(el("option", { value: step.plugin }, step.plugin));
    choice.value = step.plugin;
    const hint = el("div", { class: "muted step-hint" });
    const showHint = () => {
      const p = plugins.find((x) => x.name === choice.value);
      const names = p && p.parameters ? p.parameters.map((x) => x.name).filter(Boolean) : [];
      hint.textContent = names.length ? `Parameters: ${names.join(", ")}` : "No parameters.";
    };
    choice.addEventListener("change", showHint); showHint();
    const params = el("textarea", { class: "step-params", rows: 2, "aria-label": "Parameters (JSON object)", spellcheck: "false" });
    params.value = JSON.stringify(step.params || {});
    const pacs = el("input", { type: "checkbox", class: "step-pacs" });
    pacs.checked = Boolean(step.options && step.options.push_to_pacs);
    const move = (dir) => () => {
      const li = item, sib = dir < 0 ? li.previousElementSibling : li.nextElementSibling;
      if (sib) dir < 0 ? sib.before(li) : sib.after(li);
    };
    const item = el("li", { class: "rule-step" },
      el("label", {}, "Plugin ", choice), hint,
      el("label", {}, "Parameters (JSON) ", params),
      el("label", {}, pacs, " Send its results to the PACS"),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "step-up", onclick: move(-1) }, "Move up"),
        el("button", { type: "button", class: "step-down", onclick: move(1) }, "Move down"),
        el("button", { type: "button", class: "step-remove", onclick: () => item.remove() }, "Remove")));
    item._options = { ...(step.options || {}) };
    return item;
  }

  function openEditor(rule) {
    const form = $("#rule-form");
    form.hidden = false; $("#run-form").hidden = true;
    form.dataset.editing = rule ? rule.name : "";
    $("#rule-form-title").textContent = rule ? `Edit rule ${rule.name}` : "New rule";
    form.elements.name.value = rule ? rule.name : "";
    form.elements.name.readOnly = Boolean(rule);
    form.elements.description.value = (rule && rule.description) || "";
    form.elements.enabled.checked = rule ? rule.enabled !== false : true;
    for (const k of MATCH_KEYS) form.elements[`match.${k}`].value = (rule && rule.match && rule.match[k]) || "";
    $("#rule-steps").replaceChildren(...((rule && rule.pipeline) || [null]).map(stepItem));
    showError($("#rule-error"), null);
    form.elements.name.focus();
  }

  function ruleFromForm() {
    const f = $("#rule-form").elements;
    const match = {};
    for (const k of MATCH_KEYS) { const v = f[`match.${k}`].value.trim(); if (v) match[k] = v; }
    const pipeline = [...document.querySelectorAll("#rule-steps li.rule-step")].map((li, i) => {
      let params;
      try { params = JSON.parse(li.querySelector(".step-params").value.trim() || "{}"); }
      catch (e) { throw new Error(`Step ${i + 1}: the parameters are not a JSON object (${e.message}); write them like {"name": value}.`); }
      const options = { ...li._options, push_to_pacs: li.querySelector(".step-pacs").checked };
      if (!options.push_to_pacs) delete options.push_to_pacs;
      return { plugin: li.querySelector(".step-plugin").value, params, options };
    });
    const rule = { name: f.name.value.trim(), enabled: f.enabled.checked, match, pipeline };
    if (f.description.value.trim()) rule.description = f.description.value.trim();
    return rule;
  }

  async function saveRule(event) {
    event.preventDefault();
    const button = $("#rule-save");
    button.disabled = true;
    try {
      const res = await api("routing", { body: { rule: ruleFromForm() } });
      $("#rule-form").hidden = true;
      toast(`Rule ${res.saved.name} saved: it applies to the next study that arrives.`);
      await load();
    } catch (err) {
      showError($("#rule-error"), err);  // the server names the field (e.g. "pipeline step 2 (x): ...")
    } finally {
      button.disabled = false;
    }
  }

  async function remove(rule, button) {
    if (!window.confirm(`Delete rule ${rule.name}? Studies that arrive after this are no longer routed by it.`)) return;
    button.disabled = true;
    try {
      await api("routing", { body: { delete: rule.name } });
      toast(`Rule ${rule.name} deleted.`);
      await load();
    } catch (err) {
      showError($("#auto-error"), err);
      button.disabled = false;
    }
  }

  // -- run now: the rule's pipeline on a pull or a job's results, enabled or not --
  function openRun(rule) {
    runRule = rule.name;
    const form = $("#run-form");
    form.hidden = false; $("#rule-form").hidden = true;
    $("#run-form-title").textContent = `Run rule ${rule.name} now`;
    showError($("#run-error"), null);
    form.elements.id.focus();
  }

  async function startRun(event) {
    event.preventDefault();
    const f = $("#run-form").elements, id = f.id.value.trim();
    if (!id) { showError($("#run-error"), new Error("Give the id of a pull (radcloud pull prints it) or of a finished job.")); return; }
    $("#run-start").disabled = true;
    try {
      const res = await api("routing", { body: { run: runRule, inputs: { [f.kind.value]: id } } });
      $("#run-form").hidden = true;
      toast(`Rule ${runRule} started: its pipeline's steps are listed under Recent runs.`);
      await load();
      const row = document.querySelector(`#runs tr[data-pipeline="${res.run.pipeline}"]`);
      if (row) row.scrollIntoView({ block: "center" });
    } catch (err) {
      showError($("#run-error"), err);
    } finally {
      $("#run-start").disabled = false;
    }
  }

  async function loadPlugins() {
    const url = cfg.mode === "action" ? `${cfg.ui}/plugins.json` : "plugins.json";
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Authorization: "Bearer " + token() } });
      if (resp.ok) plugins = (await resp.json()).plugins || [];
    } catch (e) { plugins = []; }  // the editor still takes the rule's own plugin names
  }

  /* A reason in plain words (the server's radcloud.work.reasons.plain), the raw one behind "Technical details". */
  function reasonBox(plainWords, raw, label = "") {
    if (!plainWords && !raw) return "";
    return el("div", { class: "muted reason" }, label, plainWords || "",
      raw && raw !== plainWords ? el("details", {}, el("summary", {}, words.details), el("code", {}, raw)) : "");
  }

  function stepCell(run) {
    if (!run.step_states) return el("td", { dataset: { label: "Steps" } }, run.reason ? reasonBox(run.reason_plain, run.reason) : (run.steps || []).join(" → "));
    return el("td", { dataset: { label: "Steps" } }, el("ol", { class: "steps" }, ...run.step_states.map((s) => el("li", { class: `step ${s.state}`, "data-state": s.state },
      s.job ? el("a", { href: pageUrl("jobs", { job: s.job }) }, s.plugin) : s.plugin,
      ` ${words.state(s.state).toLowerCase()}${s.cached ? ` (${words.cached.toLowerCase()})` : ""}`,
      s.reason && s.state !== "succeeded" ? reasonBox(s.reason_plain, s.reason) : ""))));
  }

  function runRow(run) {
    const state = run.pipeline_state || run.state;
    return el("tr", { "data-pipeline": run.pipeline || "" },
      el("td", { title: new Date(run.at * 1000).toISOString() }, fmt.when(run.at)),
      el("td", { dataset: { label: "Rule" } }, run.rule),
      el("td", { class: "uid", dataset: { label: "Study" } }, run.study_uid || ""),
      el("td", { dataset: { label: "Pipeline" } }, run.pipeline ? el("a", { href: pageUrl("jobs", { job: run.pipeline }), class: "pipeline-job" }, stateBadge(state))
        : stateBadge(state),
        run.pipeline_reason ? reasonBox(run.pipeline_reason_plain, run.pipeline_reason) : ""),
      stepCell(run));
  }

  /* All three tables; every REFRESH_MS the runs and the waiting arrivals again (a pipeline's steps
   * end without a click), every REFRESH_MOVING_MS while a listed run's pipeline has not ended. The
   * rules are redrawn only when asked: a redraw would drop the focus of an admin about to press
   * one of their buttons. */
  const REFRESH_MS = 5000, REFRESH_MOVING_MS = 2000;
  let refreshTimer = null;
  // A quiet refresh leaves a table alone while someone reads its opened details or has focus in it.
  const inUse = (t) => $(t).contains(document.activeElement) || !!$(t).querySelector("details[open]");
  async function load({ rules = true } = {}) {
    clearTimeout(refreshTimer);
    const tables = rules ? ["#rules", "#runs", "#pending"] : [];
    for (const t of tables) $(t).setAttribute("aria-busy", "true");
    let moving = false;
    try {
      const res = await api("routing", { method: "GET" });
      moving = res.runs.some((run) => run.pipeline_state && !FINAL.includes(run.pipeline_state));
      if (rules) $("#rules tbody").replaceChildren(...(res.rules.length ? res.rules.map(ruleRow)
        : [el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No rules yet: create one with New rule."))]));
      if (rules || !inUse("#runs")) $("#runs tbody").replaceChildren(...(res.runs.length ? res.runs.map(runRow)
        : [el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No study has been routed yet."))]));
      const pending = res.pending || [];
      if (rules || !inUse("#pending")) $("#pending tbody").replaceChildren(...(pending.length ? pending.map(pendingRow)
        : [el("tr", { class: "empty" }, el("td", { colspan: 4 }, "No study is waiting: every arrival has been routed."))]));
      showError($("#auto-error"), null);
    } catch (err) {
      for (const t of tables) $(`${t} tbody`).replaceChildren();
      showError($("#auto-error"), err);
      if (err.status === 401 || err.status === 403) return;   // not an admin: nothing to refresh
    } finally {
      for (const t of tables) $(t).setAttribute("aria-busy", "false");
    }
    refreshTimer = setTimeout(() => load({ rules: false }), moving ? REFRESH_MOVING_MS : REFRESH_MS);
  }

  async function setEnabled(name, enabled, button) {
    button.disabled = true;
    try {
      await api("routing", { body: { name, enabled } });
      toast(`Rule ${name} ${enabled ? "enabled" : "disabled"}: it applies to the next study that arrives.`);
      await load();
    } catch (err) {
      showError($("#auto-error"), err);
      button.disabled = false;
    }
  }

  $("#runs-refresh").addEventListener("click", () => load());
  $("#rule-new").addEventListener("click", () => openEditor(null));
  $("#step-add").addEventListener("click", () => $("#rule-steps").append(stepItem(null)));
  $("#rule-form").addEventListener("submit", saveRule);
  $("#rule-cancel").addEventListener("click", () => { $("#rule-form").hidden = true; });
  $("#run-form").addEventListener("submit", startRun);
  $("#run-cancel").addEventListener("click", () => { $("#run-form").hidden = true; });
  loadPlugins();
  load();
})();
