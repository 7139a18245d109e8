// cs-relay console: the little JavaScript there is (no build step, no library).
// 1. "refresh every 5 s": reloads pages that change as events arrive (user, destinations),
//    remembered for this tab while the box stays checked.
// 2. Checking the box in a dead-letters table header selects every row.
(function () {
  "use strict";
  var KEY = "cs-relay-console-auto-refresh";
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("auto-refresh");
    if (box) {
      box.checked = window.sessionStorage.getItem(KEY) === "1";
      var timer = null;
      var arm = function () {
        if (timer) { window.clearTimeout(timer); timer = null; }
        if (box.checked) { timer = window.setTimeout(function () { window.location.reload(); }, 5000); }
      };
      box.addEventListener("change", function () {
        window.sessionStorage.setItem(KEY, box.checked ? "1" : "0");
        arm();
      });
      arm();
    }
    var table = document.querySelector("table.dead-letters");
    var head = table && table.querySelector("thead th");
    if (head && table.querySelector("tbody input[type=checkbox]")) {
      var all = document.createElement("input");
      all.type = "checkbox";
      all.setAttribute("aria-label", "select every dead letter shown");
      all.addEventListener("change", function () {
        table.querySelectorAll("tbody input[type=checkbox]").forEach(function (b) { b.checked = all.checked; });
      });
      head.appendChild(all);
    }
  });
})();
