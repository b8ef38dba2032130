// The Automations page (admins): the rules listed, one switched off and on again from the page,
// the recent runs with each pipeline step's state; a clinician gets no link and a refusal.
// One JSON line per step, like ui.e2e.mjs. env: RC_UI, RC_USER, RC_PASSWORD, RC_ADMIN,
// RC_ADMIN_PASSWORD, RC_RULE (the seeded rule), RC_PIPELINE (the seeded run's pipeline), RC_SHOTS
import { env, SHOTS, external, pageErrors, emit, launch, login, stepper } from "./harness.mjs";

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
    steps: await page.$$eval(`${run} li.step`, (lis) => lis.map((li) => ({ state: li.dataset.state, text: li.textContent.trim(),
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

emit({ step: "summary", external_requests: external, page_errors: pageErrors });
await browser.close();
