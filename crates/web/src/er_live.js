// Fascicolo: live updates of the emergency-room pages (our own code, no libraries).
// Without this script the pages reload each minute; with it they follow the server's
// Server-Sent Events stream (/pronto-soccorso/live) and change in place.
(function () {
  "use strict";
  var root = document.documentElement;
  root.classList.add("live-on");
  var i18n = document.getElementById("er-i18n");
  var t = function (k) { return (i18n && i18n.getAttribute("data-" + k)) || k; };
  var colours = { low: "#2e9e5b", medium: "#e0b000", high: "#ff8c1a", overcrowded: "#d9364f" };
  function mins(m) {
    if (m === null || m === undefined) return "\u2014";
    if (m < 60) return m + " min";
    var mm = m % 60;
    return Math.floor(m / 60) + " h " + (mm < 10 ? "0" : "") + mm + " min";
  }
  // instants shown in Rome time, as the server writes them (dd/mm/yyyy hh:mm)
  var romeFmt = new Intl.DateTimeFormat("it-IT", { timeZone: "Europe/Rome", day: "2-digit", month: "2-digit",
    year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  function rome(iso) { return romeFmt.format(new Date(iso)).replace(",", ""); }
  function set(el, k, text) {
    el.querySelectorAll('[data-k="' + k + '"]').forEach(function (n) { n.textContent = text; });
  }
  function apply(board) {
    var at = document.getElementById("board-at");
    if (at) at.textContent = rome(board.at);
    board.rooms.forEach(function (r) {
      var id = r[0], lvl = r[1], occ = r[2], present = r[3], awaiting = r[4], obs = r[5], boarding = r[6],
        stale = r[7], updated = r[8], codes = r[9];
      var waiting = awaiting, treatment = 0;
      codes.forEach(function (c) { waiting += c[0]; treatment += c[1]; });
      document.querySelectorAll('[data-er="' + id + '"]').forEach(function (el) {
        if (el.tagName.toLowerCase() === "circle") {
          el.setAttribute("fill", colours[lvl] || "#999");
          return;
        }
        el.querySelectorAll('[data-k="crowding"]').forEach(function (n) {
          n.textContent = t("lvl-" + lvl);
          n.className = "lvl lvl-" + lvl;
        });
        set(el, "occupancy", occ + "%");
        set(el, "present", present);
        set(el, "waiting", waiting);
        set(el, "treatment", treatment);
        set(el, "awaiting", awaiting);
        set(el, "observation", obs);
        set(el, "boarding", boarding);
        set(el, "updated", updated ? t("updated") + rome(updated) : t("nodata"));
        el.querySelectorAll('[data-k="stale"]').forEach(function (n) { n.hidden = !stale; });
        codes.forEach(function (c, i) {
          var row = el.querySelector('tr[data-code="' + (i + 1) + '"]');
          if (!row) return;
          set(row, "w", c[0]);
          set(row, "t", c[1]);
          set(row, "m", mins(c[2]));
          set(row, "l", mins(c[3]));
        });
      });
    });
  }
  if (window.EventSource) {
    var es = new EventSource("/pronto-soccorso/live");
    es.addEventListener("board", function (e) {
      try { apply(JSON.parse(e.data)); } catch (err) { /* a bad message leaves the page as it was */ }
    });
  }
  var btn = document.getElementById("use-position");
  if (btn && navigator.geolocation) {
    btn.addEventListener("click", function () {
      btn.textContent = btn.getAttribute("data-label-wait");
      navigator.geolocation.getCurrentPosition(function (p) {
        var en = document.documentElement.lang === "en" ? "&lang=en" : "";
        window.location.href = "/pronto-soccorso?lat=" + p.coords.latitude.toFixed(4) + "&lon=" + p.coords.longitude.toFixed(4) + en;
      }, function () {
        btn.textContent = t("nopos");
      });
    });
  }
})();
