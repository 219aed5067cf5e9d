// The console's one script: live updates of the approval inbox over server-sent events.
// Everything else works without it. Served by the console itself (CSP script-src 'self').
(function () {
  "use strict";
  var list = document.getElementById("inbox-list");
  if (!list || !window.EventSource) {
    return;
  }
  var status = document.getElementById("live-status");
  var source = new EventSource("/inbox/events");
  source.addEventListener("inbox", function (event) {
    // Server-rendered, escaped by the template engine; replaces the list as a reload would.
    // A card whose comment box is being typed in is kept until its form is sent.
    var active = document.activeElement;
    if (active && active.form && list.contains(active) && active.value) {
      return;
    }
    list.innerHTML = event.data;
    if (status) {
      status.textContent = "Live: updated " + new Date().toLocaleTimeString();
    }
  });
  source.addEventListener("ended", function () {
    source.close();
    if (status) {
      status.textContent = "Your session has ended: reload to sign in again.";
    }
  });
  source.onerror = function () {
    if (status) {
      status.textContent = "Live updates paused; reconnecting…";
    }
  };
})();
