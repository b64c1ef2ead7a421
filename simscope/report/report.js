/* simscope report: sortable tables, the heatmap switcher, and a self-check the tests read. */
(function () {
  "use strict";

  function sortKey(cell) {
    if (!cell) return null;
    var raw = cell.getAttribute("data-sort");
    if (raw !== null) {
      if (raw === "") return null;
      var n = Number(raw);
      return isNaN(n) ? raw.toLowerCase() : n;
    }
    var text = cell.textContent.trim();
    var num = Number(text.replace(/,/g, ""));
    return text !== "" && !isNaN(num) ? num : text.toLowerCase();
  }

  function compare(a, b) {
    if (a === null && b === null) return 0;
    if (a === null) return 1; // missing values last, whatever the direction
    if (b === null) return -1;
    if (typeof a !== typeof b) return typeof a === "number" ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function sortBy(th) {
    var table = th.closest("table");
    var body = table && table.tBodies[0];
    if (!body) return;
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.children, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) {
      return { row: row, key: sortKey(row.cells[col]), i: i };
    });
    keyed.sort(function (x, y) {
      var nullOrder = x.key === null || y.key === null;
      var c = compare(x.key, y.key);
      if (!nullOrder && !ascending) c = -c;
      return c !== 0 ? c : x.i - y.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
  }

  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.tabIndex = 0;
    th.title = th.title ? th.title + " (click to sort)" : "Click to sort";
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });

  document.querySelectorAll("select[data-switch]").forEach(function (select) {
    var group = select.getAttribute("data-switch");
    function show() {
      document.querySelectorAll('[data-group="' + group + '"]').forEach(function (el) {
        el.hidden = el.getAttribute("data-key") !== select.value;
      });
    }
    select.addEventListener("change", show);
    show();
  });

  // Self-check for automated tests: which sections have a rendered box.
  var visible = [];
  document.querySelectorAll("main > section[id]").forEach(function (s) {
    var r = s.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) visible.push(s.id);
  });
  document.documentElement.setAttribute("data-visible-sections", visible.join(" "));
  document.documentElement.setAttribute("data-report-ready", "1");
})();
