// Keeps a page current while work runs: every few seconds the page is fetched again
// and its live part (#main) replaced.  Pages with nothing running stop refreshing.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  function live(doc) {
    var main = doc.getElementById("main");
    return main !== null && main.getAttribute("data-live") === "1";
  }
  function tick() {
    if (!live(document)) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) {
          main.innerHTML = fresh.innerHTML;
          main.setAttribute("data-live", fresh.getAttribute("data-live") || "0");
        }
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { window.setTimeout(tick, PERIOD_MS); });
  }
  window.setTimeout(tick, PERIOD_MS);
})();
