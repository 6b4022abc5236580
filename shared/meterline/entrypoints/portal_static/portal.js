// Meterline customer portal: refresh the usage in place, without reloading the page.
// Served by the portal function itself (the page's Content-Security-Policy allows no inline
// script). It asks the page's JSON endpoint with the link's token every few seconds while the
// tab is visible, and swaps in the server-rendered fragment only when it changed, so focus and
// scroll stay where the reader left them.
(function () {
  "use strict";
  var main = document.getElementById("portal");
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  if (!main || !live || !status) return;
  var url = main.getAttribute("data-usage-url");
  var every = Number(main.getAttribute("data-refresh-ms")) || 5000;
  var token = new URLSearchParams(window.location.search).get("token") || "";
  var timer = null;
  var busy = false;

  function later() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, every);
  }

  function refresh() {
    if (document.hidden || busy) { later(); return; }
    busy = true;
    fetch(url, {
      headers: { "Authorization": "Bearer " + token, "Accept": "application/json" },
      cache: "no-store",
      credentials: "omit"
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        status.textContent = "This link has expired. Ask your provider for a new one.";
        timer = null;
        return null;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (data) {
      if (data === null) return;
      // The status line is a live region: it speaks only when the figures changed, not on
      // every quiet refresh.
      if (data.version !== live.getAttribute("data-version")) {
        live.innerHTML = data.html;
        live.setAttribute("data-version", data.version);
        status.textContent = data.updated_label;
      } else if (status.getAttribute("data-failed")) {
        status.textContent = data.updated_label;
      }
      status.removeAttribute("data-failed");
      later();
    }).catch(function () {
      status.textContent = "Could not refresh; trying again.";
      status.setAttribute("data-failed", "1");
      later();
    }).then(function () { busy = false; });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer !== null) refresh();
  });
  later();
})();
