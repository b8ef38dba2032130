// The Automations page (admins): the rules listed, one switched off and on again from the page,
// the recent runs with each pipeline step's state, the arrivals waiting to be routed; a rule
// created in the editor (first refused by the server's validation, naming the step), edited,
// run now on a pull until its steps end, and deleted; a clinician gets no link and a refusal.
// One JSON line per step, like ui.e2e.mjs. env: RC_UI, RC_USER, RC_PASSWORD, RC_ADMIN,
// RC_ADMIN_PASSWORD, RC_RULE (the seeded rule), RC_PIPELINE (the seeded run's pipeline),
// RC_PENDING (a seeded pending arrival's study), RC_BUSY (one refused as busy), RC_NEW_RULE (the name to create),
// RC_RETRIEVE (a staged pull to run it on), RC_SHOTS
import { env, SHOTS, FINAL, external, pageErrors, emit, launch, login, stepper } from "./harness.mjs";

const UI = env.RC_UI;
const { browser, page } = await launch();
const step = stepper(page, { shot: (name, n) => `${SHOTS}/automations-${String(n).padStart(2, "0")}-${name}.png`, fullPage: true });
const cells = (sel) => page.$$eval(sel, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent.trim())));

await step("clinician-refused", async () => {
  await page.goto(`${UI}/automations`);
  await login(page, env.RC_USER, env.RC_PASSWORD, { then: /\/ui\/automations/ });
  await page.waitForSelector("#auto-error:not([hidden])", { timeout: 15000 });
  const link = await page.isVisible('header a:has-text("Automations")');
  const refused = await page.textContent("#auto-error");
  await page.click("#logout");
  return { refused, link_visible: link };
});

await step("admin-lists-rules-and-runs", async () => {
  await page.goto(`${UI}/automations`);
  await login(page, env.RC_ADMIN, env.RC_ADMIN_PASSWORD, { then: /\/ui\/automations/ });
  await page.waitForSelector(`#rules tr[data-rule="${env.RC_RULE}"]`, { timeout: 15000 });
  await page.waitForSelector(`#runs tr[data-pipeline="${env.RC_PIPELINE}"]`, { timeout: 15000 });
  const run = `#runs tr[data-pipeline="${env.RC_PIPELINE}"]`;
  return {
    link_visible: await page.isVisible('header a:has-text("Automations")'),
    rule: (await cells(`#rules tr[data-rule="${env.RC_RULE}"]`))[0],
    run: (await cells(run))[0],
    // innerText: what is shown (a closed "Technical details" is not); the raw reason is kept behind it.
    run_shown: await page.innerText(`${run} td:nth-child(4)`),
    steps: await page.$$eval(`${run} li.step`, (lis) => lis.map((li) => ({ state: li.dataset.state, text: li.innerText.trim(),
                                                                            details: (li.querySelector("details code") || {}).textContent || "",
                                                                            job_link: li.querySelector("a") ? li.querySelector("a").getAttribute("href") : null }))),
  };
});

await step("disable-and-enable", async () => {
  const row = `#rules tr[data-rule="${env.RC_RULE}"]`;
  const toggle = async () => (await (await Promise.all([
    page.waitForResponse((r) => /\/radcloud\/routing/.test(r.url()) && r.request().method() === "POST", { timeout: 15000 }),
    page.click(`${row} button.toggle`)]))[0].json());
  const body = await toggle();
  await page.waitForSelector(`${row}.off`, { timeout: 15000 });
  const off = (await cells(row))[0];
  const toast = await page.textContent("#toast");
  const back = await toggle();
  await page.waitForSelector(`${row}:not(.off)`, { timeout: 15000 });
  return { disabled: body.saved.enabled, off, toast, enabled_again: back.saved.enabled };
});

await step("pending-arrivals", async () => {
  const row = `#pending tr:has(td:text-is("${env.RC_PENDING}"))`;
  await page.waitForSelector(row, { timeout: 15000 });
  const busy = `#pending tr:has(td:text-is("${env.RC_BUSY}")) td:nth-child(4)`;
  return { pending: (await cells(row))[0],
           busy: { shown: await page.innerText(busy), details: await page.textContent(`${busy} details code`) } };
});

page.on("dialog", (d) => d.accept());  // the Delete confirmation
const NEW = `#rules tr[data-rule="${env.RC_NEW_RULE}"]`;
const saving = (click) => Promise.all([
  page.waitForResponse((r) => /\/radcloud\/routing/.test(r.url()) && r.request().method() === "POST", { timeout: 15000 }),
  page.click(click)]).then(([r]) => r);

await step("create-rule", async () => {
  await page.click("#rule-new");
  await page.fill('#rule-form [name="name"]', env.RC_NEW_RULE);
  await page.fill('#rule-form [name="match.modality"]', "CT");
  await page.selectOption("#rule-steps li.rule-step:nth-child(1) .step-plugin", "dcm2png");
  await page.fill("#rule-steps li.rule-step:nth-child(1) .step-params", '{"thumbnailSize": "big"}');
  const refused = await saving("#rule-save");
  await page.waitForSelector("#rule-error:not([hidden])", { timeout: 15000 });
  const error = await page.textContent("#rule-error");
  await page.fill("#rule-steps li.rule-step:nth-child(1) .step-params", '{"thumbnailSize": 0}');
  await page.click("#step-add");
  await page.selectOption("#rule-steps li.rule-step:nth-child(2) .step-plugin", "dicom-tags");
  await page.click("#rule-steps li.rule-step:nth-child(2) .step-up");   // order: dicom-tags, dcm2png
  const saved = await (await saving("#rule-save")).json();
  await page.waitForSelector(NEW, { timeout: 15000 });
  return { refused_status: refused.status(), error, form_hidden: await page.isHidden("#rule-form"),
           saved: saved.saved, row: (await cells(NEW))[0] };
});

await step("edit-rule", async () => {
  await page.click(`${NEW} button.edit`);
  const name_readonly = await page.$eval('#rule-form [name="name"]', (i) => i.readOnly);
  const loaded = await page.$$eval("#rule-steps .step-plugin", (ss) => ss.map((s) => s.value));
  await page.click("#rule-steps li.rule-step:nth-child(1) .step-remove");   // dicom-tags out: dcm2png alone
  await page.fill('#rule-form [name="match.body_part"]', "CHEST*");
  const saved = await (await saving("#rule-save")).json();
  await page.waitForFunction((sel) => (document.querySelector(sel) || {}).textContent?.includes("CHEST*"), NEW, { timeout: 15000 });
  return { name_readonly, loaded, saved: saved.saved, row: (await cells(NEW))[0] };
});

await step("run-now", async () => {
  await page.click(`${NEW} button.run-now`);
  await page.selectOption('#run-form [name="kind"]', "retrieve");
  await page.fill('#run-form [name="id"]', env.RC_RETRIEVE);
  const started = await (await saving("#run-start")).json();
  const row = `#runs tr[data-pipeline="${started.run.pipeline}"]`;
  await page.waitForSelector(row, { timeout: 15000 });
  const seen = [];
  const deadline = Date.now() + 150000;
  for (;;) {   // watch, without a click: the page refreshes the runs itself until the pipeline has ended
    const states = await page.$$eval(`${row} li.step`, (lis) => lis.map((li) => li.dataset.state));
    if (!seen.length || seen[seen.length - 1].join() !== states.join()) seen.push(states);
    const pipeline = await page.$eval(`${row} td:nth-child(4)`, (td) => td.textContent.trim());
    if (states.length && states.every((s) => FINAL.includes(s))) {
      await page.waitForFunction((sel) => !/Running|Waiting|Starting|Saving/.test(document.querySelector(sel).textContent), `${row} td:nth-child(4)`, { timeout: 30000 }).catch(() => {});
      return { started: started.run, seen, pipeline: await page.$eval(`${row} td:nth-child(4)`, (td) => td.textContent.trim()),
               steps: await page.$$eval(`${row} li.step`, (lis) => lis.map((li) => ({ state: li.dataset.state, text: li.textContent.trim(),
                                                                                  job_link: li.querySelector("a") ? li.querySelector("a").getAttribute("href") : null }))) };
    }
    if (Date.now() > deadline) throw new Error(`the pipeline did not end: ${pipeline} ${JSON.stringify(seen)}`);
    await page.waitForResponse((r) => /\/radcloud\/routing/.test(r.url()) && r.request().method() === "GET", { timeout: 15000 });
    await page.waitForTimeout(100);   // the redraw after the answer
  }
});

await step("delete-rule", async () => {
  const body = await (await saving(`${NEW} button.delete`)).json();
  await page.waitForSelector(NEW, { state: "detached", timeout: 15000 });
  return { deleted: body.deleted.name, toast: await page.textContent("#toast") };
});

await step("pipeline-job-page", async () => {
  // The run's pipeline opens on the Jobs page: its parts are the steps, each linked to its job; no Retry.
  await page.click(`#runs tr[data-pipeline="${env.RC_PIPELINE}"] a.pipeline-job`);
  await page.waitForURL(/\/ui\/jobs\?job=/, { timeout: 15000 });
  await page.waitForSelector("#job-detail table tbody tr", { timeout: 15000 });
  return {
    parts: await page.$$eval("#job-detail table tbody tr", (trs) => trs.map((tr) => tr.cells[0].textContent.trim())),
    step_links: await page.$$eval("#job-detail a.step-job", (as) => as.map((a) => a.getAttribute("href"))),
    retry_buttons: await page.$$eval("#job-detail button", (bs) => bs.filter((b) => /retry/i.test(b.textContent)).length),
  };
});

await step("retry-pipeline", async () => {
  // A failed pipeline (seeded: step 1 failed) retried from its page: the failed step runs again.
  await page.goto(`${UI}/jobs?job=${env.RC_BROKEN}`);
  await page.waitForSelector("#job-detail button.retry", { timeout: 15000 });
  const states = () => page.$$eval("#job-detail table tbody tr td:nth-child(2) [data-state]", (ss) => ss.map((s) => s.dataset.state));
  const before = await states();
  const button = (await page.textContent("#job-detail button.retry")).trim();
  await Promise.all([
    page.waitForResponse((r) => /\/status\/.*\/retry/.test(r.url()) && r.status() === 200, { timeout: 30000 }),
    page.click("#job-detail button.retry")]);
  // The page handles the answer after the response arrives: wait for its toast, then for the end
  // (the page was showing "failed" before the retry: only "succeeded" ends the wait).
  await page.waitForFunction(() => document.querySelector("#toast").textContent.trim().length > 0, null, { timeout: 15000 });
  const toast = await page.textContent("#toast");
  await page.waitForSelector('#job-state[data-state="succeeded"]', { timeout: 180000 });
  return { button, before, toast, state: await page.getAttribute("#job-state", "data-state"), after: await states(),
           step_links: await page.$$eval("#job-detail a.step-job", (as) => as.map((a) => a.getAttribute("href"))) };
});

emit({ step: "summary", external_requests: external, page_errors: pageErrors });
await browser.close();
