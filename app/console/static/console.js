// mediahook console: re-fetch fragments on a timer (overview, live tail, streams, transcodes).
// An element with data-refresh="<url>" data-every="<seconds>" gets its content replaced by
// the fragment at that URL. Paused while the tab is hidden; a failed fetch is retried next tick.
"use strict";
(function () {
  function refresh(el) {
    if (document.hidden) return;
    fetch(el.dataset.refresh, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          el.innerHTML = html;
          el.dataset.refreshed = String(Date.now());
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var every = Math.max(1, parseFloat(el.dataset.every || "5")) * 1000;
      setInterval(function () { refresh(el); }, every);
    });
    // Live tail: ticking the box applies at once.
    var tail = document.getElementById("tail");
    if (tail) tail.addEventListener("change", function () { tail.form.submit(); });
  });
})();
