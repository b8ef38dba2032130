/* The words the web UI shows a clinician, in one place (issue 21 item 5): the
 * states of jobs, their parts and pulls, and the few technical terms a page
 * needs, in plain clinical language. Pages never print a raw state name, a
 * DICOM keyword or an engineering term: they ask RC.words (app.js). The raw
 * value stays in a data-state attribute for styles and tests. Plugin titles,
 * summaries and parameter labels come from each plugin's descriptor
 * ("radcloud.ui", see docs/plugins.md), not from here. */
window.RC_WORDS = {
  // A job's, a job part's or a pulled series' state → what the clinician reads.
  states: {
    queued: "Waiting to start",
    pending: "Waiting to start",
    invoked: "Starting",
    started: "Started",
    running: "Running",
    finishing: "Saving the results",
    succeeded: "Finished",
    partial: "Finished, some parts failed",
    failed: "Failed",
    cancelled: "Cancelled",
    stalled: "Stopped responding",
    unknown: "Unknown",
  },
  // One job runs as one part per series (an OpenWhisk action or a Slurm job each).
  part: "part",
  parts: "parts",
  cached: "Earlier result reused",
  retryParts: "Retry the failed parts",
  partsRestarted: "The failed parts were started again.",
  // A pipeline (an automation's steps) is retried from the step that failed; the steps before it are kept.
  retrySteps: "Retry from the failed step",
  stepsRestarted: "The pipeline starts again at the step that failed; the steps that finished are kept.",
  technicalLog: "Technical log",
  exitCode: "program exit code",
  details: "Technical details",
  result: "Result",
};
