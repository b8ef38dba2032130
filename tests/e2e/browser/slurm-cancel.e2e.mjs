// Cancel from the job page while the job runs on Slurm: the heavy CT plugin the Python side
// dispatched (routed to Slurm by its descriptor) is shown running as "Slurm job N"; the Cancel
// button is clicked; the page ends on "cancelled". Driven by test_ui_slurm.py, which checks Slurm's
// side (the job scancel'ed) and ticks reconcile as the alarm would.
// env: RC_UI, RC_USER, RC_PASSWORD, RC_JOB, RC_SHOTS
import { env, SHOTS, emit, external, consoleErrors, launch, login, stepper } from "./harness.mjs";

const { browser, page } = await launch();
const step = stepper(page, { shot: (name) => `${SHOTS}/slurm-cancel-${name}.png`, fullPage: true });
const cells = () => page.$$eval("#job-detail td.executor", (ts) => ts.map((t) => t.textContent));
const shardStates = () => page.$$eval("#job-detail tbody span.state", (ns) => ns.map((n) => n.dataset.state));
const jobUrl = `${env.RC_UI}/jobs?job=${env.RC_JOB}`;

const ok = await (async () => {
  if (!await step("running-on-slurm", async () => {
    await page.goto(jobUrl);
    await login(page, env.RC_USER, env.RC_PASSWORD, { then: /\/ui\/jobs/ });
    if (!page.url().includes(env.RC_JOB)) await page.goto(jobUrl);
    await page.waitForFunction(() => [...document.querySelectorAll("#job-detail tbody span.state")]
      .some((n) => n.dataset.state === "running"), null, { timeout: 90000, polling: 200 });
    return { runs_on: await cells(), shard_states: await shardStates() };
  })) return false;
  if (!await step("cancel-clicked", async () => {
    await page.click("#job-detail .bar button:text-is('Cancel')");
    await page.waitForFunction(() => document.querySelector("#job-state")?.dataset.state === "cancelled", null,
                               { timeout: 60000, polling: 250 });
    return { state: await page.getAttribute("#job-state", "data-state"), runs_on: await cells(),
             shard_states: await shardStates(),
             cancel_button_left: (await page.$$("#job-detail .bar button:text-is('Cancel')")).length };
  })) return false;
  return true;
})();
emit({ step: "summary", ok, external_requests: external, console_errors: consoleErrors });
await browser.close();
process.exit(ok ? 0 : 1);
