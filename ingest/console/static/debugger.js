// The live debugger: calls arrive over server-sent events and go on top; Pause keeps
// them aside (counted) until Resume; a click on a call shows its payload.
"use strict";

function debuggerPage() {
  const table = document.getElementById("calls");
  if (!table) return;
  const body = table.tBodies[0];
  const pause = document.getElementById("pause");
  const state = document.getElementById("live-state");
  const waiting = document.getElementById("waiting");
  const empty = document.getElementById("empty");
  const MAX_ROWS = 500;
  let paused = false;
  let held = [];

  const cell = (text, cls) => {
    const td = document.createElement("td");
    if (cls) {
      const inner = document.createElement(cls === "code" ? "code" : "span");
      if (cls !== "code") inner.className = cls;
      inner.textContent = text;
      td.appendChild(inner);
    } else {
      td.textContent = text;
    }
    return td;
  };

  const rows = (call) => {
    const tr = document.createElement("tr");
    tr.className = `call ${call.outcome} fresh`;
    tr.dataset.id = call.id;
    tr.dataset.outcome = call.outcome;
    tr.dataset.messageId = call.message_id || "";
    tr.tabIndex = 0;
    tr.setAttribute("aria-expanded", "false");
    const at = new Date(call.at);
    const source = (call.source || "") + (call.replay_of ? ` · replay of ${call.replay_of}` : "");
    tr.append(
      cell(at.toTimeString().slice(0, 8)),
      cell(call.outcome.replace("_", " "), "outcome"),
      cell(call.code || ""),
      cell(call.type || ""),
      cell(call.event || ""),
      cell(call.message_id || "", "code"),
      cell(source),
    );
    const detail = document.createElement("tr");
    detail.className = "payload";
    detail.dataset.for = call.id;
    detail.hidden = true;
    const td = document.createElement("td");
    td.colSpan = 7;
    const pre = document.createElement("pre");
    pre.dataset.truncated = call.truncated ? "true" : "false";
    pre.textContent = call.payload;
    td.appendChild(pre);
    if (call.truncated) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent = "Cut to 4 KB.";
      td.appendChild(note);
    }
    detail.appendChild(td);
    return [tr, detail];
  };

  const show = (calls) => {
    // oldest first in, so the newest ends on top
    for (const call of calls) {
      body.prepend(...rows(call));
    }
    while (body.rows.length > MAX_ROWS * 2) body.deleteRow(-1);
    if (empty) empty.hidden = body.rows.length > 0;
  };

  const pretty = (pre) => {
    if (pre.dataset.pretty || pre.dataset.truncated === "true") return;
    try {
      pre.textContent = JSON.stringify(JSON.parse(pre.textContent), null, 2);
    } catch (error) {
      // not JSON (a rejection's evidence may not be): shown as received
    }
    pre.dataset.pretty = "1";
  };

  const toggle = (tr) => {
    const detail = tr.nextElementSibling;
    if (!detail || !detail.classList.contains("payload")) return;
    detail.hidden = !detail.hidden;
    tr.setAttribute("aria-expanded", detail.hidden ? "false" : "true");
    if (!detail.hidden) pretty(detail.querySelector("pre"));
  };
  body.addEventListener("click", (event) => {
    const tr = event.target.closest("tr.call");
    if (tr) toggle(tr);
  });
  body.addEventListener("keydown", (event) => {
    const tr = event.target.closest("tr.call");
    if (tr && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      toggle(tr);
    }
  });

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", paused ? "true" : "false");
    pause.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "paused" : "live";
    state.className = paused ? "bad" : "good";
    if (!paused) {
      show(held);
      held = [];
      waiting.textContent = "";
    }
  });

  if (!window.EventSource) return;
  let after = table.dataset.after;
  let failures = 0;
  const open = () => {
    const url = table.dataset.stream + (after ? `&after=${encodeURIComponent(after)}` : "");
    const source = new EventSource(url);
    source.addEventListener("end", () => {
      source.close();
      state.textContent = "signed out: reload";
      state.className = "bad";
    });
    source.onopen = () => { failures = 0; };
    source.onmessage = (event) => {
      const data = JSON.parse(event.data);
      after = data.last || after;
      if (paused) {
        held = held.concat(data.calls);
        waiting.textContent = `${held.length} new call${held.length === 1 ? "" : "s"} waiting`;
      } else {
        show(data.calls);
      }
    };
    source.onerror = () => {
      // EventSource reconnects by itself, but from the address it opened with: reopen
      // from the last call seen, so nothing arrives twice
      source.close();
      failures += 1;
      if (failures > 5) {
        state.textContent = "disconnected: reload";
        state.className = "bad";
        return;
      }
      setTimeout(open, 2000);
    };
  };
  open();
}

document.addEventListener("DOMContentLoaded", debuggerPage);
