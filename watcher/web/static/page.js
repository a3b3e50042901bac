// Live updates and drag-and-drop for the shop's page. Everything works without this file:
// the forms post and the page reloads; this only keeps the page current and takes dropped photos.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var live = document.getElementById("live");
  var token = document.querySelector('meta[name="thumbgen-token"]');
  var shown = null;  // the live part last put in, to touch the page only when it changed

  function refresh() {
    var address = new URL(window.location.href);
    var part = "/parte" + address.search + (address.search ? "&" : "?") +
      "t=" + encodeURIComponent(token ? token.content : "");
    fetch(part, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (html !== null && live && shown !== html) {
          live.innerHTML = html;
          shown = html;
        }
      })
      .catch(function () { /* the daemon restarts: try again at the next tick */ })
      .then(function () { window.setTimeout(refresh, POLL_MS); });
  }
  if (live && window.fetch) { window.setTimeout(refresh, POLL_MS); }

  var input = document.getElementById("fotos");
  var form = document.getElementById("upload");
  var zone = input ? input.closest(".drop") : null;
  if (zone && form && window.DataTransfer) {
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        form.submit();
      }
    });
  }
})();
