// Live updates: when Mission Control announces a change, fetch this page again and swap its
// main content. Without JavaScript the pages still render and work (forms post normally).
(function () {
  var main = document.getElementById("main");
  if (!main || !main.dataset.live || !window.EventSource) return;
  var source = new EventSource(main.dataset.live);
  source.addEventListener("change", function () {
    var active = document.activeElement;
    // Never wipe what someone is typing or choosing: no refresh while a form field has focus.
    if (active && active !== main && active.closest && active.closest("form")) return;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        if (next) { main.innerHTML = next.innerHTML; main.dataset.updated = Date.now(); }
      });
  });
})();
