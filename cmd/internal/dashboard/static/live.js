// Progressive enhancement: while the page is visible, fetch it again every 5 s and swap the
// main part in place. Without JavaScript (Tor Browser's safest level) the page works as is:
// reload it to see changes.
(function () {
  "use strict";
  var busy = false;
  function refresh() {
    if (document.hidden || busy) return;
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "SELECT")) return;
    busy = true;
    fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), cur = document.getElementById("live");
        if (fresh && cur) cur.innerHTML = fresh.innerHTML;
      })
      .catch(function () {})
      .finally(function () { busy = false; });
  }
  setInterval(refresh, 5000);
})();
