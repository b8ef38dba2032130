/* Audit trail (admins): newest first, filter by user/action, page back.
 * Times in the reader's time zone; a "Loading…" row while the trail is read. */
(function () {
  "use strict";
  const { $, el, api, fmt, showError } = window.RC;
  const table = $("#audit");
  const tbody = $("#audit tbody");
  let next = null;
  $("#audit-zone").textContent = fmt.zone();

  async function load(reset) {
    if (reset) { tbody.replaceChildren(); next = null; }
    const loading = el("tr", { class: "empty loading" }, el("td", { colspan: 6 }, "Loading the audit trail…"));
    tbody.append(loading);
    table.setAttribute("aria-busy", "true");
    $("#audit-more").disabled = true;
    try {
      const res = await api("audit", { method: "GET", query: { limit: 50, before: next, who: $("#a-who").value.trim(), action: $("#a-action").value.trim() } });
      loading.remove();
      if (reset && !res.entries.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 6 }, "No entries match.")));
      // data-label: the column's name, shown before each value where a phone stacks an entry's cells
      for (const e of res.entries) tbody.append(el("tr", {},
        el("td", { title: e.when }, fmt.when(e.when)), el("td", { dataset: { label: "Who" } }, `${e.who} (${e.role || "-"})`),
        el("td", { dataset: { label: "Action" } }, e.action), el("td", { dataset: { label: "Outcome" } }, e.outcome),
        el("td", { dataset: { label: "What" } }, Object.entries(e.what || {}).map(([k, v]) => `${k}: ${[].concat(v).join(", ")}`).join("; ")),
        el("td", { dataset: { label: "From" } }, e.client)));
      next = res.next;
      $("#audit-more").hidden = !next;
      showError($("#audit-error"), null);
    } catch (err) {
      loading.remove();
      showError($("#audit-error"), err);
    } finally {
      table.setAttribute("aria-busy", "false");
      $("#audit-more").disabled = false;
    }
  }
  $("#audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(true); });
  $("#audit-more").addEventListener("click", () => load(false));
  load(true);
})();
