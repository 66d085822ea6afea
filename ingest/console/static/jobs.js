// Jobs: while a job is queued or running, its progress, status and counts are read again
// every second from /console/jobs/{id}/progress and put in place (no reload, no eval).
"use strict";

const FINAL = ["done", "failed", "cancelled", "interrupted", "skipped"];

function showJob(root, job) {
  const field = (name) => root.querySelector(`[data-field="${name}"]`);
  const status = field("status");
  if (status) {
    const asked = job.cancel_requested && !FINAL.includes(job.status) ? " (cancel requested)" : "";
    status.textContent = job.status + asked;
    status.className = `status-${job.status}`;
  }
  const bar = field("progress");
  if (bar) {
    bar.max = job.total ? job.total : 1;
    if (job.total !== null) bar.value = job.done;
    else if (FINAL.includes(job.status)) bar.value = 0; // no total, and no longer moving
  }
  const done = field("done");
  if (done) done.textContent = `${job.done} / ${job.total === null ? "?" : job.total}`;
  const counts = field("counts");
  if (counts) {
    const parts = Object.entries(job.counts).map(([k, v]) => `${k} ${v}`);
    counts.textContent = parts.length ? parts.join(", ") : "none";
  }
  const errors = field("errors");
  if (errors) errors.textContent = String(job.errors.length);
  // times as the server writes them: "YYYY-MM-DD HH:MM:SS" (UTC)
  const when = (iso) => new Date(iso).toISOString().replace("T", " ").slice(0, 19);
  const heartbeat = field("heartbeat");
  if (heartbeat && job.heartbeat_at) heartbeat.textContent = when(job.heartbeat_at);
  const finished = field("finished");
  if (finished && job.finished_at) finished.textContent = when(job.finished_at);
}

function follow(root) {
  const id = root.dataset.job;
  const tick = async () => {
    let job;
    try {
      const answer = await fetch(`/console/jobs/${encodeURIComponent(id)}/progress`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (answer.status === 401) return; // signed out: stop asking
      if (!answer.ok) throw new Error(String(answer.status));
      job = await answer.json();
    } catch (error) {
      window.setTimeout(tick, 5000); // the server is away: ask again later
      return;
    }
    showJob(root, job);
    if (FINAL.includes(job.status)) {
      delete root.dataset.active;
      const cancel = document.querySelector(`form[action="/console/jobs/${id}/cancel"]`);
      if (cancel) cancel.remove();
      const list = root.ownerDocument.querySelector(`[data-field="error-list"]`);
      if (list && root.matches("section") && job.errors.length) {
        list.textContent = job.errors.map((e) => JSON.stringify(e)).join("\n");
      }
      return;
    }
    window.setTimeout(tick, 1000);
  };
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-job][data-active]").forEach(follow);
});
