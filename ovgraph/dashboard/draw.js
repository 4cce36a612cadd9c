/*
 * The picture of a graph: lays out a graph view (GET /v1/graphs/{name}, ovgraph/graph_view.py)
 * with dagre and draws it as an SVG string.
 *
 * No DOM is used, so the dashboard (in the browser) and `ovgraph draw --format svg` (QuickJS,
 * ovgraph/graph_picture.py) run this same code and draw the same picture. Nodes are boxes named
 * by node and calculator, filled by executor; streams are labelled edges, back edges dashed;
 * expanded subgraphs are grouped in a labelled frame; graph inputs and outputs are pills. Each
 * node has a statistics line (`.stats`) that the dashboard rewrites while requests flow.
 */
(function (root) {
  "use strict";

  var CHAR = 7.25; // advance of a 12 px monospace character
  var LINE = 16;
  var PAD = 10;
  var FILLS = ["#eef4fc", "#fdf3df", "#e8f5ec", "#f4ebfd", "#fdeaea", "#e6f6f6"];
  var STROKES = ["#3f6fb0", "#b8801a", "#37834b", "#8052b8", "#b84a47", "#2b8585"];
  var STATS_TEMPLATE = "calls 000000 · p50 000.0ms p99 000.0ms · q 000";

  function esc(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;");
  }

  function width(text) {
    return String(text).length * CHAR;
  }

  function duration(us) {
    if (us === null || us === undefined) {
      return "–";
    }
    if (us < 1000) {
      return Math.round(us) + "µs";
    }
    if (us < 1e6) {
      return (us / 1000).toFixed(1) + "ms";
    }
    return (us / 1e6).toFixed(2) + "s";
  }

  // The live line of a node: calls, p50/p99 time in process(), packets queued.
  function statsLine(node) {
    if (node.process_calls === undefined) {
      return "calls – · p50 – p99 – · q –";
    }
    var t = node.process_time_us || {};
    var line = "calls " + node.process_calls + " · p50 " + duration(t.p50) + " p99 " +
      duration(t.p99) + " · q " + node.queued;
    if (node.errors) {
      line += " · errors " + node.errors;
    }
    return line;
  }

  function executorIndex(view) {
    var names = Object.keys(view.executors || { "": 0 }).sort();
    var index = {};
    names.forEach(function (name, i) {
      index[name] = i % FILLS.length;
    });
    return index;
  }

  // Streams from a node to itself (OVMS's LOOPBACK): drawn as a loop on the node's right side,
  // in room reserved beside the box, rather than routed by the layout.
  function selfLoops(view) {
    var loops = {};
    view.edges.forEach(function (edge) {
      if (edge.from !== null && edge.from === edge.to) {
        (loops[edge.from] = loops[edge.from] || []).push(edge);
      }
    });
    return loops;
  }

  function edgeLabel(edge) {
    return edge.back_edge ? edge.stream + " (back edge)" : edge.stream;
  }

  function loopRoom(edges) {
    var widest = 0;
    (edges || []).forEach(function (edge) { widest = Math.max(widest, width(edgeLabel(edge))); });
    return edges ? widest + 46 : 0;
  }

  function layout(view) {
    var loops = selfLoops(view);
    var g = new dagre.graphlib.Graph({ compound: true, multigraph: true });
    g.setGraph({ rankdir: "TB", nodesep: 36, ranksep: 52, edgesep: 18, marginx: 24,
      marginy: 28 });
    g.setDefaultEdgeLabel(function () { return {}; });
    (view.subgraphs || []).forEach(function (sg) {
      g.setNode("sg:" + sg.name, { subgraph: sg });
    });
    (view.subgraphs || []).forEach(function (sg) {
      if (sg.parent) {
        g.setParent("sg:" + sg.name, "sg:" + sg.parent);
      }
    });
    view.nodes.forEach(function (node, i) {
      var w = Math.max(width(node.name) + 8, width(node.calculator), width(STATS_TEMPLATE));
      var room = loopRoom(loops[node.name]);
      g.setNode("n:" + node.name, { width: w + 2 * PAD + room, height: 3 * LINE + 2 * PAD - 2,
        box: w + 2 * PAD, node: node, index: i, loops: loops[node.name] || [] });
      var path = node.subgraph || [];
      if (path.length) {
        g.setParent("n:" + node.name, "sg:" + path[path.length - 1]);
      }
    });
    (view.inputs || []).forEach(function (stream) {
      g.setNode("in:" + stream, { width: width(stream) + 28, height: 26, stream: stream,
        kind: "input" });
    });
    (view.outputs || []).forEach(function (stream) {
      g.setNode("out:" + stream, { width: width(stream) + 28, height: 26, stream: stream,
        kind: "output" });
    });
    view.edges.forEach(function (edge, i) {
      if (edge.from !== null && edge.from === edge.to) {
        return;
      }
      var from = edge.from === null ? "in:" + edge.stream : "n:" + edge.from;
      var to = edge.to === null ? "out:" + edge.stream : "n:" + edge.to;
      var label = edgeLabel(edge);
      g.setEdge(from, to, { label: label, width: width(label) + 6, height: 14, labelpos: "c",
        edge: edge }, "e" + i);
    });
    dagre.layout(g);
    return g;
  }

  function pathOf(points) {
    return points.map(function (p, i) {
      return (i ? "L" : "M") + p.x.toFixed(1) + " " + p.y.toFixed(1);
    }).join(" ");
  }

  function depth(g, id) {
    var d = 0;
    for (var parent = g.parent(id); parent; parent = g.parent(parent)) {
      d += 1;
    }
    return d;
  }

  // Draw `view`; returns {svg, width, height}. `options.title` adds a caption.
  function draw(view, options) {
    options = options || {};
    var g = layout(view);
    var box = g.graph();
    var colours = executorIndex(view);
    var top = options.title ? 24 : 0;
    var w = Math.ceil(box.width);
    var h = Math.ceil(box.height) + top;
    var out = [];
    out.push('<svg xmlns="http://www.w3.org/2000/svg" class="ovgraph-graph" width="' + w +
      '" height="' + h + '" viewBox="0 0 ' + w + " " + h + '" font-family="DejaVu Sans Mono, ' +
      'Menlo, Consolas, monospace" font-size="12" data-graph="' + esc(view.name) + '">');
    out.push("<defs>" +
      '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" ' +
      'markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" ' +
      'fill="#5b6472"/></marker>' +
      '<marker id="arrow-back" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" ' +
      'markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" ' +
      'fill="#b5552b"/></marker></defs>');
    out.push('<rect class="background" x="0" y="0" width="' + w + '" height="' + h +
      '" fill="#ffffff"/>');
    if (options.title) {
      out.push('<text x="12" y="18" font-size="14" font-weight="bold" fill="#1f2933">' +
        esc(options.title) + "</text>");
    }
    out.push('<g transform="translate(0 ' + top + ')">');
    var clusters = g.nodes().filter(function (id) { return id.indexOf("sg:") === 0; });
    clusters.sort(function (a, b) { return depth(g, a) - depth(g, b); });
    clusters.forEach(function (id) {
      var n = g.node(id);
      var sg = n.subgraph;
      var x = n.x - n.width / 2 - 8;
      var y = n.y - n.height / 2 - 14;
      out.push('<g class="subgraph" data-subgraph="' + esc(sg.name) + '">' +
        '<rect x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' +
        (n.width + 16).toFixed(1) + '" height="' + (n.height + 22).toFixed(1) +
        '" rx="10" fill="#f7f8fa" stroke="#98a2b3" stroke-dasharray="6 4"/>' +
        '<text x="' + (x + 10).toFixed(1) + '" y="' + (y + 14).toFixed(1) +
        '" fill="#52606d" font-size="11" stroke="#f7f8fa" stroke-width="3" ' +
        'paint-order="stroke">subgraph ' + esc(sg.name) + " : " +
        esc(sg.calculator) + "</text></g>");
    });
    g.edges().forEach(function (e) {
      var label = g.edge(e);
      var back = label.edge.back_edge;
      var colour = back ? "#b5552b" : "#5b6472";
      out.push('<g class="stream' + (back ? " back-edge" : "") + '" data-stream="' +
        esc(label.edge.stream) + '"><path d="' + pathOf(label.points) + '" fill="none" ' +
        'stroke="' + colour + '" stroke-width="1.4"' + (back ? ' stroke-dasharray="5 4"' : "") +
        ' marker-end="url(#' + (back ? "arrow-back" : "arrow") + ')"/>');
      var mid = label.points[Math.floor(label.points.length / 2)];
      var lx = label.x !== undefined ? label.x : mid.x;
      var ly = label.y !== undefined ? label.y : mid.y;
      out.push('<text x="' + lx.toFixed(1) + '" y="' + (ly + 4).toFixed(1) +
        '" text-anchor="middle" font-size="11" fill="' + colour + '" stroke="#ffffff" ' +
        'stroke-width="3" paint-order="stroke">' + esc(label.label) + "</text></g>");
    });
    g.nodes().forEach(function (id) {
      var n = g.node(id);
      if (n.kind) {
        var x0 = n.x - n.width / 2;
        var y0 = n.y - n.height / 2;
        out.push('<g class="graph-' + n.kind + '"><rect x="' + x0.toFixed(1) + '" y="' +
          y0.toFixed(1) + '" width="' + n.width.toFixed(1) + '" height="' +
          n.height.toFixed(1) + '" rx="13" fill="#1f2933"/><text x="' + n.x.toFixed(1) +
          '" y="' + (n.y + 4).toFixed(1) + '" text-anchor="middle" fill="#ffffff">' +
          esc(n.stream) + "</text></g>");
        return;
      }
      if (!n.node) {
        return;
      }
      var node = n.node;
      var c = colours[node.executor || ""] || 0;
      var x = n.x - n.width / 2;
      var y = n.y - n.height / 2;
      n.loops.forEach(function (edge, k) {
        var right = x + n.box;
        var y1 = n.y - 10 - 6 * k;
        var y2 = n.y + 10 + 6 * k;
        var reach = right + 26 + 8 * k;
        out.push('<g class="stream back-edge self-loop" data-stream="' + esc(edge.stream) +
          '"><path d="M' + right.toFixed(1) + " " + y1.toFixed(1) + " C" + reach.toFixed(1) +
          " " + (y1 - 14).toFixed(1) + " " + reach.toFixed(1) + " " + (y2 + 14).toFixed(1) +
          " " + (right + 1).toFixed(1) + " " + y2.toFixed(1) + '" fill="none" ' +
          'stroke="#b5552b" stroke-width="1.4" stroke-dasharray="5 4" ' +
          'marker-end="url(#arrow-back)"/><text x="' + (reach + 4).toFixed(1) + '" y="' +
          (n.y + 4).toFixed(1) + '" font-size="11" fill="#b5552b" stroke="#ffffff" ' +
          'stroke-width="3" paint-order="stroke">' + esc(edgeLabel(edge)) + "</text></g>");
      });
      out.push('<g class="node" data-node="' + esc(node.name) + '" data-index="' + n.index +
        '" data-executor="' + esc(node.executor || "") + '">' +
        '<rect class="frame" x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" width="' +
        n.box.toFixed(1) + '" height="' + n.height.toFixed(1) + '" rx="6" fill="' +
        FILLS[c] + '" stroke="' + STROKES[c] + '" stroke-width="1.5"/>' +
        '<text class="name" x="' + (x + PAD).toFixed(1) + '" y="' + (y + PAD + 11).toFixed(1) +
        '" font-weight="bold" fill="#1f2933">' + esc(node.name) + "</text>" +
        '<text class="calculator" x="' + (x + PAD).toFixed(1) + '" y="' +
        (y + PAD + 11 + LINE).toFixed(1) + '" fill="#52606d">' + esc(node.calculator) +
        "</text>" +
        '<text class="stats" x="' + (x + PAD).toFixed(1) + '" y="' +
        (y + PAD + 11 + 2 * LINE).toFixed(1) + '" fill="#1d4f91">' + esc(statsLine(node)) +
        "</text></g>");
    });
    var used = {};
    view.nodes.forEach(function (node) { used[node.executor || ""] = true; });
    var names = Object.keys(used).sort();
    if (names.length > 1) {
      var lx0 = 12;
      names.forEach(function (name) {
        var c2 = colours[name] || 0;
        out.push('<g class="legend"><rect x="' + lx0 + '" y="' + (h - top - 20) +
          '" width="12" height="12" fill="' + FILLS[c2] + '" stroke="' + STROKES[c2] +
          '"/><text x="' + (lx0 + 16) + '" y="' + (h - top - 10) + '" font-size="11">' +
          esc(name ? "executor " + name : "default executor") + "</text></g>");
        lx0 += width(name ? "executor " + name : "default executor") + 36;
      });
    }
    out.push("</g></svg>");
    return { svg: out.join(""), width: w, height: h };
  }

  root.ovgraphDraw = draw;
  root.ovgraphStatsLine = statsLine;
  root.ovgraphDuration = duration;
})(typeof globalThis !== "undefined" ? globalThis : this);
