/*
 * The live graph page: draws every served graph once (draw.js), then polls
 * GET /v1/graphs/{name} every second and rewrites each node's statistics line, the run counters
 * and the running requests. With an API key on the server, the JSON routes answer 401 and the
 * page asks for the key (kept in this tab's sessionStorage).
 */
(function () {
  "use strict";

  var POLL_MS = 1000;
  var KEY_ITEM = "ovgraph-api-key";
  var key = window.sessionStorage.getItem(KEY_ITEM) || "";
  var sections = {};

  function Unauthorized() {}

  function getJSON(path) {
    var headers = key ? { Authorization: "Bearer " + key } : {};
    return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
      if (r.status === 401) {
        throw new Unauthorized();
      }
      if (!r.ok) {
        throw new Error(path + ": HTTP " + r.status);
      }
      return r.json();
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) {
      e.className = cls;
    }
    if (text !== undefined) {
      e.textContent = text;
    }
    return e;
  }

  function setStatus(text, isError) {
    var s = document.getElementById("status");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
  }

  function showKeyForm(message) {
    var form = document.getElementById("key-form");
    form.hidden = false;
    document.getElementById("key-error").textContent = message || "";
    document.getElementById("graphs").hidden = true;
    setStatus("API key required", true);
  }

  function hideKeyForm() {
    document.getElementById("key-form").hidden = true;
    document.getElementById("graphs").hidden = false;
  }

  function section(name) {
    var s = sections[name];
    if (!s) {
      var root = el("section", "graph");
      root.dataset.graph = name;
      var title = el("h2");
      title.appendChild(el("span", "graph-name", name));
      var state = el("span", "state");
      title.appendChild(state);
      root.appendChild(title);
      var runs = el("div", "runs");
      root.appendChild(runs);
      var figure = el("div", "figure");
      root.appendChild(figure);
      var running = el("div", "running-runs");
      root.appendChild(running);
      document.getElementById("graphs").appendChild(root);
      s = { root: root, state: state, runs: runs, figure: figure, running: running, shape: "" };
      sections[name] = s;
    }
    return s;
  }

  function shapeOf(view) {
    return JSON.stringify([view.nodes.map(function (n) { return n.name; }), view.edges]);
  }

  function ms(value) {
    return value === null || value === undefined ? "–" : ovgraphDuration(value * 1000);
  }

  function renderRuns(s, runs) {
    s.runs.innerHTML = "";
    [["started", runs.started], ["running", runs.running], ["finished", runs.finished],
     ["failed", runs.failed], ["cancelled", runs.cancelled]].forEach(function (pair) {
      var span = el("span", "runs-" + pair[0]);
      span.appendChild(document.createTextNode(pair[0] + " "));
      span.appendChild(el("b", null, String(pair[1])));
      span.appendChild(document.createTextNode(" · "));
      s.runs.appendChild(span);
    });
    s.runs.appendChild(document.createTextNode(
      "run time p50 " + ms(runs.duration_ms.p50) + ", p99 " + ms(runs.duration_ms.p99)));
  }

  function renderRunning(s, running) {
    s.running.innerHTML = "";
    if (!running.length) {
      s.running.appendChild(el("div", "none", "No request running."));
      return;
    }
    var table = el("table", "running");
    var head = el("tr");
    ["run", "age", "inside a call now"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    running.forEach(function (run) {
      var row = el("tr");
      row.appendChild(el("td", null, "#" + run.run_id + (run.retired ? " (graph before reload)" : "")));
      row.appendChild(el("td", null, run.age_ms + " ms"));
      row.appendChild(el("td", null, run.nodes_running.join(", ") || "(waiting)"));
      table.appendChild(row);
    });
    s.running.appendChild(table);
  }

  function render(view) {
    var s = section(view.name);
    s.state.textContent = view.state;
    s.state.classList.remove("not-available");
    var shape = shapeOf(view);
    if (shape !== s.shape) {
      s.figure.innerHTML = ovgraphDraw(view).svg;
      s.shape = shape;
    }
    view.nodes.forEach(function (node, i) {
      var g = s.figure.querySelector('g.node[data-index="' + i + '"]');
      if (!g) {
        return;
      }
      g.querySelector("text.stats").textContent = ovgraphStatsLine(node);
      g.classList.toggle("running", node.running > 0);
      g.classList.toggle("errors", node.errors > 0);
    });
    renderRuns(s, view.runs);
    renderRunning(s, view.running);
  }

  function renderUnavailable(entry) {
    var s = section(entry.name);
    s.state.textContent = entry.state;
    s.state.classList.add("not-available");
    s.runs.textContent = "";
    s.figure.innerHTML = "";
    s.shape = "";
    s.running.innerHTML = "";
    if (entry.error) {
      s.running.appendChild(el("div", "error-text", entry.error));
    }
  }

  function tick() {
    return getJSON("/v1/graphs").then(function (list) {
      hideKeyForm();
      var names = {};
      var views = list.graphs.map(function (entry) {
        names[entry.name] = true;
        if (entry.state !== "AVAILABLE") {
          renderUnavailable(entry);
          return null;
        }
        return getJSON("/v1/graphs/" + encodeURIComponent(entry.name)).then(render);
      });
      Object.keys(sections).forEach(function (name) {
        if (!names[name]) {
          sections[name].root.remove();
          delete sections[name];
        }
      });
      return Promise.all(views);
    }).then(function () {
      setStatus("live · updated " + new Date().toLocaleTimeString());
    }, function (err) {
      if (err instanceof Unauthorized) {
        showKeyForm(key ? "That key was refused." : "");
      } else {
        setStatus("cannot reach the server: " + err.message, true);
      }
    }).then(function () {
      window.setTimeout(tick, POLL_MS);
    });
  }

  document.getElementById("key-form").addEventListener("submit", function (event) {
    event.preventDefault();
    key = document.getElementById("key-input").value.trim();
    window.sessionStorage.setItem(KEY_ITEM, key);
    document.getElementById("key-error").textContent = "checking…";
  });

  tick();
})();
