/* Run: pick a plugin, fill a form generated from its ChRIS descriptor,
 * dispatch it on the staged images, then watch it on the Jobs page. */
(function () {
  "use strict";
  const { $, el, api, cfg, token, showError, state, pageUrl, fmt } = window.RC;
  const staged = state.get("staged", null);
  const listBox = $("#plugin-list");
  const fields = $("#param-fields");
  const runBtn = $("#run-btn");
  let plugins = [];
  let current = null;

  let inputs = null;      // the dispatch inputs of the chosen radio: one pull, or one staged study

  /* The inputs: the last pull of this browser session (if any), then every staged
   * study (GET retrieve/staged), so a new login finds what was pulled before. One
   * choice at a time — one patient's images per run, named in the label. */
  function inputChoice(id, label, value, checked, detail) {
    const input = el("input", { type: "radio", name: "inputs", id, checked, onchange: () => { inputs = value; ready(); } });
    if (checked) inputs = value;
    return el("label", { for: id, class: "staged-item" }, input, " ", label, detail ? el("span", { class: "desc" }, detail) : "");
  }
  const ago = (s) => s === null || s === undefined ? "" : s < 90 ? "just now" : s < 5400 ? `${Math.round(s / 60)} min ago`
    : s < 172800 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} days ago`;

  async function loadStaged() {
    const box = $("#staged-list");
    const items = [];
    const last = staged && (staged.retrieve_id || (staged.series || []).length) ? staged : null;
    if (last) {
      const n = (last.series || []).length;
      items.push(inputChoice("in-last", el("strong", {}, "Your last pull"),
        last.retrieve_id ? { retrieve: last.retrieve_id } : { series: last.series }, true,
        `${n} series` + ((last.studies || []).length ? ` of ${last.studies.map((s) => fmt.name(s.PatientName)).filter(Boolean).join(", ") || "1 study"}` : "")));
    }
    let answer = { studies: [] };
    try { answer = await api("retrieve/staged", { method: "GET" }); showError($("#staged-error"), null); }
    catch (err) { showError($("#staged-error"), err); }
    answer.studies.forEach((st, i) => {
      // radcloud's own results (derived series) are not run on as if they were scanner images.
      const usable = st.series.filter((s) => s.complete && !s.derived);
      const results = st.series.filter((s) => s.complete && s.derived).length;
      if (!usable.length) return;
      items.push(inputChoice(`in-study-${i}`,
        el("span", {}, el("strong", {}, fmt.name(st.PatientName) || "(no name)"), " ", el("span", { class: "mrn" }, st.PatientID || ""),
          ` · ${fmt.date(st.StudyDate)} ${st.StudyDescription || ""}`),
        { prefixes: usable.map((s) => s.manifest) }, false,
        `${usable.length} series, ${st.instances} images, ${fmt.bytes(st.bytes)}` + (st.age_s !== null ? ` · staged ${ago(st.age_s)}` : "") +
          (results ? ` · ${results} result series of earlier runs left out` : "")));
    });
    box.replaceChildren(...items);
    if (!items.length) box.append(el("p", { class: "muted", id: "nothing-staged" }, "Nothing is staged yet: pull studies on the Search page first."));
    ready();
  }
  function ready() {
    runBtn.disabled = !(current && inputs);
    if (current && !inputs) showError($("#run-error"), new Error("Choose the images to run on above (pull studies first if there are none)."));
    else showError($("#run-error"), null);
  }

  async function loadPlugins() {
    const url = cfg.mode === "action" ? `${cfg.ui}/plugins.json` : "plugins.json";
    try {
      const resp = await fetch(url, { credentials: "same-origin", headers: { Authorization: "Bearer " + token() } });
      if (!resp.ok) throw new Error(`The plugin list could not be loaded (HTTP ${resp.status}).`);
      plugins = (await resp.json()).plugins || [];
    } catch (err) {
      listBox.replaceChildren();
      showError($("#run-error"), err);
      return;
    }
    listBox.replaceChildren();
    if (!plugins.length) listBox.append(el("p", { class: "muted" }, "No plugins are installed."));
    plugins.forEach((p, i) => {
      const input = el("input", { type: "radio", name: "plugin", value: p.name, id: `plugin-${i}`,
                                  onchange: () => choose(p) });
      listBox.append(el("label", { for: `plugin-${i}` }, input, " ",
        el("span", { class: "title" }, p.title || p.name), " ", el("span", { class: "badge" }, `v${p.version || "?"}`),
        el("span", { class: "desc" }, p.summary || p.description || "")));
    });
    const wanted = new URLSearchParams(location.search).get("plugin");
    const pre = plugins.find((p) => p.name === wanted) || (plugins.length === 1 ? plugins[0] : null);
    if (pre) { listBox.querySelector(`input[value="${CSS.escape(pre.name)}"]`).checked = true; choose(pre); }
  }

  function choose(p) {
    current = p;
    // Plain words first (the descriptor's radcloud.ui); the engineer's description behind a disclosure.
    $("#plugin-about").replaceChildren(el("strong", {}, p.title || p.name), ": ", p.summary || p.description || "",
      p.details ? el("details", { class: "technical" }, el("summary", {}, `${RC.words.details} (${p.name})`), el("p", {}, p.details)) : "");
    fields.replaceChildren();
    const names = (p.parameters || []).map((x) => x.name);
    if (names.includes("wc") && names.includes("ww")) fields.append(windowPresets());
    for (const prm of p.parameters || []) fields.append(field(prm));
    ready();
  }

  /* CT window presets (centre, width in HU) for plugins taking wc/ww. */
  function windowPresets() {
    const presets = [["Soft tissue", 40, 400], ["Lung", -600, 1500], ["Bone", 300, 2000], ["Brain", 40, 80], ["From the images", "", ""]];
    return el("div", { class: "param", role: "group", "aria-label": "Window presets" }, el("span", { class: "label" }, "Window preset: "),
      presets.map(([label, wc, ww]) => el("button", { type: "button", class: "small", onclick: () => {
        fields.querySelector('[name="wc"]').value = wc; fields.querySelector('[name="ww"]').value = ww; } }, label), " "));
  }

  function field(prm) {
    const id = `param-${prm.name}`;
    const label = prm.label || prm.name;
    const help = prm.help ? el("div", { class: "help", id: id + "-help" }, prm.help) : null;
    const described = help ? id + "-help" : undefined;
    // The command-line flag and the plugin author's own words, for whoever needs them.
    const details = prm.details ? el("details", { class: "technical" }, el("summary", {}, RC.words.details), el("code", {}, prm.details)) : "";
    let input;
    if (prm.type === "bool") {
      input = el("input", { type: "checkbox", id, name: prm.name, checked: !!prm.default, "aria-describedby": described });
      return el("div", { class: "param" }, el("label", { for: id }, input, " ", label), help, details);
    }
    if (prm.type === "int" || prm.type === "float") {
      input = el("input", { type: "number", id, name: prm.name, step: prm.type === "int" ? "1" : "any",
                            value: prm.default ?? "", required: !prm.optional, "aria-describedby": described });
    } else {
      input = el("input", { type: "text", id, name: prm.name, value: prm.default ?? "", required: !prm.optional,
                            "aria-describedby": described });
    }
    return el("div", { class: "param" }, el("label", { for: id }, label, prm.optional ? "" : " (required)"), input, help, details);
  }

  function values() {
    const out = {};
    for (const prm of current.parameters || []) {
      const input = fields.querySelector(`[name="${CSS.escape(prm.name)}"]`);
      if (!input) continue;
      if (prm.type === "bool") { if (input.checked !== !!prm.default) out[prm.name] = input.checked; continue; }
      if (input.value === "" || String(prm.default ?? "") === input.value) continue;
      out[prm.name] = prm.type === "int" ? parseInt(input.value, 10) : prm.type === "float" ? parseFloat(input.value) : input.value;
    }
    return out;
  }

  $("#run-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!current) return;
    runBtn.disabled = true;
    showError($("#run-error"), null);
    try {
      const res = await api("dispatch", { body: {
        plugin: current.name, params: values(), inputs,
        options: { deidentify: $("#opt-deid").checked, push_to_pacs: $("#opt-push").checked, force: $("#opt-force").checked,
                   executor: $("#opt-executor").value || null } } });
      state.set("lastJob", res.job_id);
      location.href = pageUrl("jobs", { job: res.job_id });
    } catch (err) {
      showError($("#run-error"), err);
      runBtn.disabled = false;
    }
  });

  loadStaged();
  loadPlugins();
})();
