/* Audit trail (admins): newest first, filter by user/action, page back. */
(function () {
  "use strict";
  const { $, el, api, showError } = window.RC;
  const tbody = $("#audit tbody");
  let next = null;

  async function load(reset) {
    if (reset) { tbody.replaceChildren(); next = null; }
    try {
      const res = await api("audit", { method: "GET", query: { limit: 50, before: next, who: $("#a-who").value.trim(), action: $("#a-action").value.trim() } });
      for (const e of res.entries) tbody.append(el("tr", {},
        el("td", {}, e.when.replace("T", " ").slice(0, 19)), el("td", {}, `${e.who} (${e.role || "-"})`), el("td", {}, e.action),
        el("td", {}, e.outcome), el("td", {}, Object.entries(e.what || {}).map(([k, v]) => `${k}: ${[].concat(v).join(", ")}`).join("; ")),
        el("td", {}, e.client)));
      next = res.next;
      $("#audit-more").hidden = !next;
      showError($("#audit-error"), null);
    } catch (err) { showError($("#audit-error"), err); }
  }
  $("#audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(true); });
  $("#audit-more").addEventListener("click", () => load(false));
  load(true);
})();
