"""The HTML report's stylesheet and script, inlined into every page (no external files)."""

STYLE = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;--soft:#f6f8fa;--fail:#cf222e;
--warn:#bf8700;--ok:#1a7f37;--bar:#0969da;--allowed:#8c959f}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
color:var(--fg);background:var(--bg);margin:0;padding:20px 28px}h1{font-size:22px;margin:0 0 12px}
h2{font-size:17px;margin:26px 0 8px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:130px;
background:var(--soft)}.card b{display:block;font-size:20px}.card span{color:var(--muted)}
.notes{color:var(--muted)}.charts{display:flex;flex-wrap:wrap;gap:18px;margin-top:18px}
.chart{margin:0;border:1px solid var(--line);border-radius:8px;padding:8px 10px;max-width:100%;
overflow-x:auto}figcaption{font-weight:600;margin-bottom:4px}svg text{font-size:12px;
fill:var(--fg)}svg .value{fill:var(--muted)}.bar{fill:var(--bar)}.fail{fill:var(--fail)}
.warn{fill:var(--warn)}.allowed{fill:var(--allowed)}.axis{stroke:var(--line)}
table{border-collapse:collapse;width:100%;margin-top:8px}th,td{border-bottom:1px solid var(--line);
padding:4px 8px;text-align:left;vertical-align:top}th{background:var(--soft);position:sticky;top:0}
th button{all:unset;cursor:pointer;font-weight:600}
th[aria-sort=ascending] button::after{content:" ▲"}
th[aria-sort=descending] button::after{content:" ▼"}td.n{text-align:right;
font-variant-numeric:tabular-nums}.nodeid{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;
font-size:12.5px;word-break:break-all}button.toggle{all:unset;cursor:pointer}
button.toggle::before{content:"▸ ";color:var(--muted)}button.toggle[aria-expanded=true]::before{
content:"▾ "}tr.dbguard-fail td.nodeid,tr.regressed td.nodeid{color:var(--fail)}
.badge{border-radius:10px;padding:0 8px;font-size:12px;background:var(--soft);
border:1px solid var(--line)}.badge.failed,.badge.error{color:var(--fail)}
.badge.passed{color:var(--ok)}tr.detail>td{background:var(--soft);padding:10px 14px}
.detail table{background:var(--bg)}.detail h3{font-size:13px;margin:6px 0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre{white-space:pre-wrap;margin:4px 0}.finding{border-left:3px solid var(--warn);
padding:2px 10px;margin:6px 0}.finding.fail{border-color:var(--fail)}
.finding.allowed{border-color:var(--allowed)}#filter{margin-top:6px;padding:5px 8px;width:360px;
max-width:100%;border:1px solid var(--line);border-radius:6px}.regressions ul{margin:0;
padding-left:18px}.empty{color:var(--muted)}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dbguard-data").textContent);
  var table = document.getElementById("tests");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function detailFor(index) {
    var test = data.tests[index];
    var box = el("div", null, "detail");
    box.appendChild(el("h3", "Call-phase query shapes"));
    var shapes = Object.keys(test.fp).map(function (id) {
      return [id, test.fp[id], test.sites[id] || []];
    }).sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
    if (!shapes.length) box.appendChild(el("p", "No queries in the call phase.", "empty"));
    else {
      var t = el("table"), head = t.createTHead().insertRow();
      ["Count", "SQL shape", "Call sites"].forEach(function (h) { head.appendChild(el("th", h)); });
      var tb = t.createTBody();
      shapes.forEach(function (fp) {
        var row = tb.insertRow();
        row.appendChild(el("td", fp[1], "n"));
        var sqlCell = row.insertCell();
        sqlCell.appendChild(el("code", data.sql[fp[0]] || fp[0]));
        row.appendChild(el("td", fp[2].map(function (s) {
          return (s[0] || "?") + " (" + s[1] + "×)";
        }).join(", ")));
      });
      box.appendChild(t);
    }
    box.appendChild(el("h3", "Findings"));
    if (!test.fi.length) box.appendChild(el("p", "No findings.", "empty"));
    test.fi.forEach(function (f) {
      var div = el("div", null, "finding " + (f.allowed ? "allowed" : f.action));
      var allowed = f.allowed ? " (allowed: " + f.allowed + ")" : "";
      div.appendChild(el("b", "[" + f.rule + "] " + f.action + allowed));
      div.appendChild(el("div", f.phase + ": " + f.message));
      if (f.lines.length) div.appendChild(el("pre", f.lines.join("\n")));
      if (f.hint) div.appendChild(el("div", "hint: " + f.hint));
      box.appendChild(div);
    });
    var aliases = Object.keys(test.alias);
    if (aliases.length) {
      box.appendChild(el("h3", "Queries by alias (setup / call / teardown)"));
      box.appendChild(el("p", aliases.map(function (a) {
        var c = test.alias[a];
        return a + ": " + c.setup + " / " + c.call + " / " + c.teardown;
      }).join(" · ")));
    }
    if (test.conn.length) {
      box.appendChild(el("h3", "Connections"));
      box.appendChild(el("p", test.conn.map(function (c) {
        return c.alias + " on " + c.thread + " (" + (c.closed ? "closed" : "left open") + ")";
      }).join(" · ")));
    }
    return box;
  }

  function toggle(row, button) {
    if (row.dbguardDetail) {
      row.dbguardDetail.remove();
      row.dbguardDetail = null;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    var detail = document.createElement("tr");
    detail.className = "detail";
    var cell = detail.insertCell();
    cell.colSpan = headers.length;
    cell.appendChild(detailFor(Number(row.getAttribute("data-i"))));
    row.after(detail);
    row.dbguardDetail = detail;
    button.setAttribute("aria-expanded", "true");
  }

  body.addEventListener("click", function (event) {
    var button = event.target.closest("button.toggle");
    if (button) toggle(button.closest("tr"), button);
  });

  function mainRows() {
    return Array.prototype.filter.call(body.rows, function (r) {
      return r.hasAttribute("data-i");
    });
  }

  function sortBy(column) {
    var th = headers[column];
    var ascending = th.getAttribute("aria-sort") === "descending" ||
      (th.getAttribute("aria-sort") === "none" && th.dataset.type === "text");
    headers.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = th.dataset.type === "num";
    var keyed = mainRows().map(function (row) {
      var cell = row.cells[column];
      var key = numeric ? parseFloat(cell.getAttribute("data-v")) : cell.textContent;
      if (numeric && isNaN(key)) key = -Infinity;
      return { row: row, key: key, i: Number(row.getAttribute("data-i")) };
    });
    keyed.sort(function (a, b) {
      var c = numeric ? (a.key - b.key || 0) : a.key.localeCompare(b.key);
      if (c === 0) return a.i - b.i;
      return ascending ? c : -c;
    });
    var fragment = document.createDocumentFragment();
    keyed.forEach(function (k) {
      fragment.appendChild(k.row);
      if (k.row.dbguardDetail) fragment.appendChild(k.row.dbguardDetail);
    });
    body.appendChild(fragment);
  }

  headers.forEach(function (th, column) {
    th.querySelector("button").addEventListener("click", function () { sortBy(column); });
  });

  document.getElementById("filter").addEventListener("input", function (event) {
    var needle = event.target.value.toLowerCase();
    mainRows().forEach(function (row) {
      var hide = needle && row.cells[0].textContent.toLowerCase().indexOf(needle) < 0;
      row.hidden = !!hide;
      if (row.dbguardDetail) row.dbguardDetail.hidden = !!hide;
    });
  });
  document.documentElement.setAttribute("data-ready", "true");
})();
"""
