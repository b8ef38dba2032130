// A job the Python side routed to Slurm while the node was busy, as the job page shows it:
// the queue reason while it waits, then "Slurm job N" in "Runs on" and the final state.
// Driven by test_ui_slurm.py (which holds the node until RC_SEEN exists and ticks reconcile, as
// the alarm would). env: RC_UI, RC_USER, RC_PASSWORD, RC_JOB, RC_SEEN, RC_SHOTS
import { writeFileSync } from "node:fs";
import { env, SHOTS, FINAL, emit, external, consoleErrors, launch, login, stepper } from "./harness.mjs";

const { browser, page } = await launch();
const step = stepper(page, { shot: (name) => `${SHOTS}/slurm-${name}.png`, fullPage: true });
const cells = () => page.$$eval("#job-detail td.executor", (ts) => ts.map((t) => t.textContent));
const jobUrl = `${env.RC_UI}/jobs?job=${env.RC_JOB}`;

const ok = await (async () => {
  if (!await step("queued-on-slurm", async () => {
    await page.goto(jobUrl);
    await login(page, env.RC_USER, env.RC_PASSWORD, { then: /\/ui\/jobs/ });
    if (!page.url().includes(env.RC_JOB)) await page.goto(jobUrl);
    // Slurm's scheduler names why a job waits once it has looked at it: "waiting to be scheduled"
    // (reason None) until then; wait for a reason the scheduler gave (resources, priority).
    await page.waitForFunction(() => [...document.querySelectorAll("#job-detail .queue-reason")]
      .some((n) => !n.textContent.includes("to be scheduled")), null, { timeout: 60000, polling: 250 });
    const reasons = await page.$$eval("#job-detail .queue-reason", (ns) => ns.map((n) => n.textContent));
    writeFileSync(env.RC_SEEN, "seen");   // the test frees the node now
    return { reasons, runs_on: await cells(), state: await page.getAttribute("#job-state", "data-state") };
  })) return false;
  if (!await step("finished-on-slurm", async () => {
    // the state is shown in plain words (words.js); the raw one is in data-state
    await page.waitForFunction((f) => f.includes(document.querySelector("#job-state")?.dataset.state), FINAL,
                               { timeout: 90000, polling: 250 });
    const left = await page.$$("#job-detail .queue-reason");
    return { runs_on: await cells(), state: await page.getAttribute("#job-state", "data-state"), reasons_left: left.length };
  })) return false;
  return true;
})();
emit({ step: "summary", ok, external_requests: external, console_errors: consoleErrors });
await browser.close();
process.exit(ok ? 0 : 1);
