// Dead letters: the bulk replay in parts with a progress bar that moves; a letter being
// replayed watched until it is done. No framework, nothing fetched from elsewhere.
"use strict";

// Each part is one POST (the form's fields, its CSRF token included) answered in JSON:
// `replay` with the page's filter, `limit` up to the chunk, after the previous part's
// `last_id`. It stops when the confirmed total is replayed or a part replays nothing.
function bulkReplay(form) {
  const total = Number(form.dataset.total);
  const chunk = Number(form.dataset.chunk);
  const box = document.getElementById("progress");
  const bar = box.querySelector("progress");
  const count = box.querySelector("[data-field=replayed]");
  const state = box.querySelector("[data-field=state]");
  form.addEventListener("submit", async (event) => {
    if (event.defaultPrevented) return;
    event.preventDefault();
    form.querySelector("button[type=submit]").disabled = true;
    box.hidden = false;
    let done = 0;
    let after = "";
    try {
      while (done < total) {
        const body = new URLSearchParams(new FormData(form));
        body.set("limit", String(Math.min(chunk, total - done)));
        if (after) body.set("after_id", after);
        const answer = await fetch(form.action, {
          method: "POST",
          body,
          headers: { Accept: "application/json" },
          credentials: "same-origin",
        });
        const data = await answer.json();
        if (!answer.ok) throw new Error(data.message || `HTTP ${answer.status}`);
        if (data.replayed === 0) break;
        done += data.replayed;
        after = String(data.last_id);
        bar.value = done;
        count.textContent = String(done);
      }
      state.textContent = done < total
        ? `: done, ${total - done} no longer pending (replayed or discarded meanwhile)`
        : ": done";
      box.dataset.finished = "true";
    } catch (error) {
      state.textContent = `: stopped: ${error.message}`;
      state.classList.add("error");
      box.dataset.finished = "failed";
    }
  });
}

// A letter sent back through the pipeline: reload until it is replayed or failed again.
function watchLetter() {
  const letter = document.getElementById("letter");
  if (letter && letter.dataset.status === "replaying") {
    window.setTimeout(() => window.location.reload(), 1500);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.querySelector("form[data-bulk-replay]");
  if (form) bulkReplay(form);
  watchLetter();
});
