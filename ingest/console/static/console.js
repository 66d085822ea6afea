// The console's only script: no framework, nothing fetched from elsewhere.
"use strict";

function drawChart(svg, values) {
  const w = 600, h = 120, n = values.length || 1;
  const peak = Math.max(1, ...values);
  const bar = w / n;
  svg.replaceChildren();
  values.forEach((v, i) => {
    const height = Math.round((v / peak) * (h - 4));
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    rect.setAttribute("x", String(i * bar + 1));
    rect.setAttribute("y", String(h - height));
    rect.setAttribute("width", String(Math.max(1, bar - 2)));
    rect.setAttribute("height", String(height));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${v} calls, ${n - i - 1} min ago`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
}

function charts(root) {
  root.querySelectorAll("svg[data-chart]").forEach((svg) => {
    const values = (svg.dataset.chart || "").split(",").filter((x) => x !== "").map(Number);
    drawChart(svg, values);
  });
}

function liveOverview() {
  const pipeline = document.getElementById("pipeline");
  if (!pipeline || !window.EventSource) return;
  const source = new EventSource(pipeline.dataset.stream);
  source.addEventListener("end", () => source.close());
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    const set = (root, field, text) => {
      const el = root.querySelector(`[data-field="${field}"]`);
      if (el) el.textContent = text;
      return el;
    };
    set(pipeline, "queue_depth", String(data.queue_depth));
    set(pipeline, "oldest_queued", data.oldest_queued_seconds === null
      ? "none waiting" : `${data.oldest_queued_seconds.toFixed(1)} s`);
    const breaker = set(pipeline, "breaker",
      data.breaker.open ? `open: ${data.breaker.reason}` : "closed");
    if (breaker) breaker.className = data.breaker.open ? "bad" : "good";
    set(pipeline, "workers", String(data.workers_alive.length));
    for (const p of data.projects) {
      const section = document.querySelector(`section[data-project="${CSS.escape(p.stats.project)}"]`);
      if (!section) continue;
      for (const key of ["received", "stored", "duplicates", "rejected", "dead_lettered", "in_flight"]) {
        const el = section.querySelector(`[data-count="${key}"]`);
        if (el) el.textContent = String(p.stats[key]);
      }
      const ok = set(section, "reconciled", p.reconciled ? "accounted for" : "does not add up");
      if (ok) ok.className = p.reconciled ? "good" : "bad";
      set(section, "peak", String(Math.max(...p.calls_per_minute)));
      const svg = section.querySelector("svg[data-chart]");
      if (svg) drawChart(svg, p.calls_per_minute);
    }
  };
}

// A form whose textarea must hold JSON: checked before it is sent.
function jsonChecks(root) {
  root.querySelectorAll("form[data-json]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      const area = form.querySelector(form.dataset.json);
      const out = form.querySelector(".json-error");
      try {
        const value = JSON.parse(area.value);
        if (value === null || typeof value !== "object" || Array.isArray(value)) {
          throw new Error("the payload must be a JSON object");
        }
        if (out) out.textContent = "";
      } catch (error) {
        event.preventDefault();
        if (out) out.textContent = `Not sent: ${error.message}`;
      }
    });
  });
}

// A form that asks first (discard, cancel, revoke).
function confirms(root) {
  root.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  charts(document);
  liveOverview();
  jsonChecks(document);
  confirms(document);
  if (window.koalaPage) window.koalaPage();
});
