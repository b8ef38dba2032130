/* Automations (admins): routing rules, switched on/off at once, and the runs they started with
 * each pipeline step's state. Reads and writes the `routing` web action only. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError, toast, pageUrl, words, stateBadge } = window.RC;
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
    return el("tr", { "data-rule": rule.name, class: on ? "" : "off" },
      el("td", {}, rule.name, rule.description ? el("div", { class: "muted" }, rule.description) : ""),
      el("td", {}, matchText(rule.match)),
      el("td", {}, (rule.pipeline || []).map((s, i) => `${i + 1}. ${s.plugin}${s.options && s.options.push_to_pacs ? " → PACS" : ""}`).join("  ")),
      el("td", { class: "state" }, on ? "on" : "off"),
      el("td", {}, button));
  }

  function stepCell(run) {
    if (!run.step_states) return el("td", {}, run.reason || (run.steps || []).join(" → "));
    return el("td", {}, el("ol", { class: "steps" }, ...run.step_states.map((s) => el("li", { class: `step ${s.state}`, "data-state": s.state, title: s.reason || "" },
      s.job ? el("a", { href: pageUrl("jobs", { job: s.job }) }, s.plugin) : s.plugin,
      ` ${words.state(s.state).toLowerCase()}${s.cached ? ` (${words.cached.toLowerCase()})` : ""}`,
      s.reason && s.state !== "succeeded" ? el("div", { class: "muted reason" }, s.reason) : ""))));
  }

  function runRow(run) {
    const state = run.pipeline_state || run.state;
    return el("tr", { "data-pipeline": run.pipeline || "" },
      el("td", { title: new Date(run.at * 1000).toISOString() }, fmt.when(run.at)),
      el("td", {}, run.rule),
      el("td", { class: "uid" }, run.study_uid || ""),
      el("td", {}, run.pipeline ? el("a", { href: pageUrl("jobs", { job: run.pipeline }), class: "pipeline-job" }, stateBadge(state))
        : stateBadge(state),
        run.pipeline_reason ? el("div", { class: "muted reason" }, run.pipeline_reason) : ""),
      stepCell(run));
  }

  async function load() {
    for (const t of ["#rules", "#runs"]) $(t).setAttribute("aria-busy", "true");
    try {
      const res = await api("routing", { method: "GET" });
      $("#rules tbody").replaceChildren(...(res.rules.length ? res.rules.map(ruleRow)
        : [el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No rules yet: save one with radcloud routes save RULE.json."))]));
      $("#runs tbody").replaceChildren(...(res.runs.length ? res.runs.map(runRow)
        : [el("tr", { class: "empty" }, el("td", { colspan: 5 }, "No study has been routed yet."))]));
      showError($("#auto-error"), null);
    } catch (err) {
      for (const t of ["#rules tbody", "#runs tbody"]) $(t).replaceChildren();
      showError($("#auto-error"), err);
    } finally {
      for (const t of ["#rules", "#runs"]) $(t).setAttribute("aria-busy", "false");
    }
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

  $("#runs-refresh").addEventListener("click", load);
  load();
})();
