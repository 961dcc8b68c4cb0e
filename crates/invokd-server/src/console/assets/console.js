// The console's own behaviour, loaded as a same-origin script (no inline script is allowed):
// pausing live updates, copy buttons, selecting every job, the custom image size.
"use strict";

// Live parts ([data-live]) are fetched again by htmx on a timer; skip a fetch while updates are
// paused, the tab is hidden, or jobs are selected (a refresh would clear the selection).
document.addEventListener("htmx:beforeRequest", (e) => {
  const elt = e.detail && e.detail.elt;
  if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-live")) return;
  const live = document.getElementById("live");
  const paused = live && !live.checked;
  const selecting = document.querySelector("#selection input[name=id]:checked");
  if (paused || document.hidden || selecting) e.preventDefault();
});

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent).then(() => {
    const was = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = was; }, 1500);
  });
});

document.addEventListener("change", (e) => {
  const t = e.target;
  if (t.matches("input[data-select-all]")) {
    document.querySelectorAll("#selection input[name=id]").forEach((box) => { box.checked = t.checked; });
  }
  if (t.matches("select[data-size-select]")) showSize(t);
});

function showSize(select) {
  const custom = select.parentElement.querySelector("[data-size-custom]");
  if (custom) custom.hidden = select.value !== "custom";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-size-select]").forEach(showSize);
});
