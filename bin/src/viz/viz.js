// faultline viz: draws the space-time diagram of one run from the data embedded in this
// page. Hand-written, no library, no network: everything it needs is in the page.
(function () {
  'use strict';

  var timing = { scriptStart: performance.now() };
  var meta = JSON.parse(document.getElementById('viz-meta').textContent);
  var ev = JSON.parse(document.getElementById('viz-data').textContent);
  timing.parsed = performance.now();
  var LIMIT = meta.max_drawn_per_layer;
  var N = meta.nodes;
  var rawLines = null;

  function rawLine(j) {
    if (rawLines === null) {
      rawLines = document.getElementById('viz-raw').textContent.split('\n');
    }
    // The page writes `<` as U+0001 (which JSON text never holds unescaped).
    return rawLines[j].replace(/\u0001/g, '<');
  }

  function esc(s) {
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  }

  function fmtTime(t, digits) {
    var d = digits === undefined ? 6 : digits;
    return (t / 1e6).toFixed(d) + 's';
  }

  // ---- The window -------------------------------------------------------------------
  var lo = meta.window.from !== null ? meta.window.from : (meta.window.first !== null ? meta.window.first : 0);
  var hi = meta.window.to !== null ? meta.window.to : (meta.window.last !== null ? meta.window.last : lo + 1000);
  if (hi <= lo) { hi = lo + 1000; }
  var view = { lo: lo, hi: hi };

  // ---- Layers, built once from the records --------------------------------------------
  var arrows = [], drops = [], dups = [], periods = [], marks = [], timers = [], ops = [], obs = [], quiet = [];
  var delivered = {}, duplicated = {};
  var openDown = {}, openPause = {}, openOps = {};
  var openPartition = null, openClogs = [];

  function closePartition(t) {
    if (openPartition) {
      var p = openPartition;
      p.nodes.forEach(function (n) {
        periods.push({ j: p.j, n: n, s: p.t, e: t, cls: 'partition-period', group: 'partitions', strength: p.cut[n] });
      });
      openPartition = null;
    }
  }
  function closeClogs(t) {
    openClogs.forEach(function (c) {
      var e = Math.min(t, c.u);
      [c.a, c.b].forEach(function (n) {
        periods.push({ j: c.j, n: n, s: c.t, e: e, cls: 'clog-period', group: 'partitions' });
      });
    });
    openClogs = [];
  }

  ev.forEach(function (r, j) {
    switch (r.k) {
      case 'deliver': {
        var again = delivered[r.m] === true;
        delivered[r.m] = true;
        arrows.push({ j: j, s: r.s !== undefined ? r.s : r.t, t: r.t, a: r.a, b: r.b, l: r.l, dup: again && duplicated[r.m] === true });
        break;
      }
      case 'drop':
        drops.push({ j: j, s: r.s !== undefined ? r.s : r.t, t: r.t, a: r.a, b: r.b, l: r.l });
        break;
      case 'duplicate':
        duplicated[r.m] = true;
        dups.push({ j: j, t: r.t, a: r.a, b: r.b });
        break;
      case 'crash':
        marks.push({ j: j, t: r.t, n: r.n, cls: 'crash-mark', group: 'crashes' });
        openDown[r.n] = { j: j, t: r.t };
        break;
      case 'restart':
      case 'start':
        marks.push({ j: j, t: r.t, n: r.n, cls: r.k + '-mark', group: 'crashes' });
        if (openDown[r.n]) {
          periods.push({ j: openDown[r.n].j, n: r.n, s: openDown[r.n].t, e: r.t, cls: 'down-period', group: 'crashes' });
          delete openDown[r.n];
        }
        break;
      case 'pause':
        marks.push({ j: j, t: r.t, n: r.n, cls: 'pause-mark', group: 'pauses' });
        openPause[r.n] = { j: j, t: r.t };
        break;
      case 'resume':
        marks.push({ j: j, t: r.t, n: r.n, cls: 'resume-mark', group: 'pauses' });
        if (openPause[r.n]) {
          periods.push({ j: openPause[r.n].j, n: r.n, s: openPause[r.n].t, e: r.t, cls: 'pause-period', group: 'pauses' });
          delete openPause[r.n];
        }
        break;
      case 'partition': {
        closePartition(r.t);
        // Each node's share of peers it cannot reach (either way): an isolated node is
        // shaded fully, the nodes that merely lost it lightly.
        var peers = {};
        (r.c || []).forEach(function (link) {
          (peers[link[0]] = peers[link[0]] || {})[link[1]] = true;
          (peers[link[1]] = peers[link[1]] || {})[link[0]] = true;
        });
        var cut = {};
        Object.keys(peers).forEach(function (n) { cut[n] = Object.keys(peers[n]).length / Math.max(1, N - 1); });
        openPartition = { j: j, t: r.t, nodes: Object.keys(peers).map(Number), cut: cut };
        break;
      }
      case 'heal':
        closePartition(r.t);
        break;
      case 'clog':
        openClogs.push({ j: j, t: r.t, a: r.a, b: r.b, u: r.u });
        break;
      case 'unclog':
        closeClogs(r.t);
        break;
      case 'quiet_phase':
        closePartition(r.t);
        closeClogs(r.t);
        quiet.push({ j: j, t: r.t });
        break;
      case 'disk':
        marks.push({ j: j, t: r.t, n: r.n, cls: 'disk-mark', group: 'disk' });
        break;
      case 'timer':
        timers.push({ j: j, t: r.t, n: r.n });
        break;
      case 'invoke':
        openOps[r.c + ':' + r.o] = ops.length;
        ops.push({ j: j, ji: j, jc: null, s: r.t, t: null, n: r.n, outcome: 'pending' });
        break;
      case 'complete': {
        var key = r.c + ':' + r.o;
        if (openOps[key] !== undefined) {
          var op = ops[openOps[key]];
          op.t = r.t; op.jc = j; op.j = j; op.outcome = r.l;
          delete openOps[key];
        } else {
          ops.push({ j: j, ji: null, jc: j, s: lo, t: r.t, n: r.n, outcome: r.l });
        }
        break;
      }
      case 'observe':
        obs.push({ j: j, t: r.t, n: r.n, l: r.l });
        break;
      default:
        break;
    }
  });
  var end = hi;
  closePartition(end);
  closeClogs(end);
  Object.keys(openDown).forEach(function (n) {
    periods.push({ j: openDown[n].j, n: Number(n), s: openDown[n].t, e: end, cls: 'down-period', group: 'crashes' });
  });
  Object.keys(openPause).forEach(function (n) {
    periods.push({ j: openPause[n].j, n: Number(n), s: openPause[n].t, e: end, cls: 'pause-period', group: 'pauses' });
  });
  ops.forEach(function (op) { if (op.t === null) { op.t = end; } });

  timing.layers = performance.now();

  // Which node an event is drawn on (for citations).
  function laneOf(r) {
    if (r.n !== undefined) { return r.n; }
    if (r.b !== undefined) { return r.b; }
    return null;
  }

  // ---- Filters --------------------------------------------------------------------------
  var GROUPS = [
    ['messages', 'messages', true],
    ['drops', 'drops', true],
    ['duplicates', 'duplicates', true],
    ['partitions', 'partitions and clogs', true],
    ['crashes', 'crashes and restarts', true],
    ['pauses', 'pauses', true],
    ['disk', 'disk faults', true],
    ['ops', 'client operations', true],
    ['obs', 'observations', true],
    ['timers', 'timers', false]
  ];
  var showGroup = {};
  var showNode = [];
  var nodeFilters = document.getElementById('node-filters');
  var kindFilters = document.getElementById('kind-filters');
  var filterHtml = [];
  for (var n = 0; n < N; n++) {
    showNode.push(true);
    filterHtml.push('<label><input type="checkbox" class="node-filter" data-node="' + n + '" checked>n' + n + '</label>');
  }
  nodeFilters.insertAdjacentHTML('beforeend', filterHtml.join(''));
  filterHtml = [];
  GROUPS.forEach(function (g) {
    showGroup[g[0]] = g[2];
    filterHtml.push('<label><input type="checkbox" class="kind-filter" data-group="' + g[0] + '"' + (g[2] ? ' checked' : '') + '>' + esc(g[1]) + '</label>');
  });
  kindFilters.insertAdjacentHTML('beforeend', filterHtml.join(''));
  nodeFilters.addEventListener('change', function (e) {
    showNode[Number(e.target.dataset.node)] = e.target.checked;
    schedule();
  });
  kindFilters.addEventListener('change', function (e) {
    showGroup[e.target.dataset.group] = e.target.checked;
    schedule();
  });

  // ---- Header ---------------------------------------------------------------------------
  document.getElementById('title').textContent = meta.title + ' — space-time diagram';
  var info = [];
  if (meta.protocol) { info.push('protocol ' + meta.protocol); }
  if (meta.seed !== null) { info.push('seed ' + meta.seed); }
  if (meta.bugs.length) { info.push('bug flags ' + meta.bugs.join(', ')); }
  info.push(N + ' nodes');
  info.push(meta.embedded_events.toLocaleString('en') + ' of ' + meta.trace_events.toLocaleString('en') + ' trace events in this page');
  info.push('window ' + fmtTime(lo) + ' – ' + fmtTime(hi) + (meta.window.nodes.length ? ' (nodes ' + meta.window.nodes.join(', ') + ')' : ''));
  document.getElementById('run-info').innerHTML = esc(info.join(' · ')) +
    (meta.command ? '<br><code>' + esc(meta.command) + '</code>' : '');
  var limits = 'Limits: a page holds at most ' + meta.max_embedded_events.toLocaleString('en') +
    ' events (choose a window with --from/--to/--node for more); at most ' + LIMIT.toLocaleString('en') +
    ' elements of one kind are drawn at once — beyond that a kind is drawn as per-lane density until you zoom in.';
  if (meta.cut) {
    limits += ' This window had more events than a page holds: it ends at event ' + meta.embedded_events.toLocaleString('en') + '.';
  }
  document.getElementById('limits').textContent = limits;
  var vbox = document.getElementById('violations');
  if (meta.violations.length === 0) {
    vbox.innerHTML = '<div class="ok">' + esc(meta.note || 'No violation: every checker passed.') + '</div>';
  } else {
    vbox.innerHTML = meta.violations.map(function (v, k) {
      return '<div class="violation" data-v="' + k + '"><b>' + esc(v.kind) + '</b> — ' + esc(v.message) +
        (v.time !== null ? ' (at ' + fmtTime(v.time) + ')' : ' (judged at the end of the run)') + '</div>';
    }).join('');
  }
  vbox.addEventListener('click', function (e) {
    var el = e.target.closest('[data-v]');
    if (el) { focusViolation(Number(el.dataset.v)); }
  });

  document.getElementById('legend').innerHTML = [
    ['#3465a4', 'message (send → delivery)'], ['#8e44ad', 'duplicate'], ['#c0392b', 'dropped (×)'],
    ['rgba(243,156,18,0.4)', 'partitioned'], ['rgba(127,140,141,0.35)', 'clogged link'],
    ['rgba(85,85,85,0.3)', 'crashed (down)'], ['rgba(41,128,185,0.3)', 'paused'], ['#e67e22', 'disk fault'],
    ['#2c9a48', 'op ok'], ['#d0202c', 'op fail'], ['#e6a700', 'op info'], ['#1e6b34', 'observation'],
    ['#d0202c', 'violation and the events it cites (circled)']
  ].map(function (p) { return '<span><i style="background:' + p[0] + '"></i>' + esc(p[1]) + '</span>'; }).join('');

  // ---- Drawing ----------------------------------------------------------------------------
  var svg = document.getElementById('plot');
  var note = document.getElementById('aggregate-note');
  var ML = 56, MR = 16, MT = 30;
  var geom = {};

  function layout() {
    var width = Math.max(400, svg.clientWidth || (window.innerWidth - 420));
    var lanes = [];
    for (var i = 0; i < N; i++) { if (showNode[i]) { lanes.push(i); } }
    var laneH = Math.max(18, Math.min(120, Math.floor(600 / Math.max(1, lanes.length))));
    var index = {};
    lanes.forEach(function (n, k) { index[n] = k; });
    geom = { width: width, lanes: lanes, laneH: laneH, index: index, height: MT + lanes.length * laneH + 12 };
  }
  function x(t) { return ML + (t - view.lo) / (view.hi - view.lo) * (geom.width - ML - MR); }
  function y(n) { return MT + geom.index[n] * geom.laneH + geom.laneH / 2; }
  function visible(n) { return n !== null && n !== undefined && geom.index[n] !== undefined; }
  function r1(v) { return Math.round(v * 10) / 10; }

  function niceStep(span) {
    var raw = span / 8;
    var p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
  }

  // Draws `items` one by one, or as per-lane density if there are more than LIMIT.
  function layer(out, name, items, laneOfItem, timeOfItem, drawOne, notes, title) {
    if (items.length <= LIMIT) {
      items.forEach(function (it) { out.push(drawOne(it)); });
      return;
    }
    notes.push(items.length.toLocaleString('en') + ' ' + title);
    var bins = 200, counts = {}, max = 1;
    items.forEach(function (it) {
      var n = laneOfItem(it);
      var b = Math.min(bins - 1, Math.max(0, Math.floor((timeOfItem(it) - view.lo) / (view.hi - view.lo) * bins)));
      var key = n + ':' + b;
      counts[key] = (counts[key] || 0) + 1;
      if (counts[key] > max) { max = counts[key]; }
    });
    var bw = (geom.width - ML - MR) / bins;
    Object.keys(counts).forEach(function (key) {
      var parts = key.split(':');
      var n = Number(parts[0]), b = Number(parts[1]);
      var c = counts[key];
      out.push('<rect class="heat heat-' + name + '" x="' + r1(ML + b * bw) + '" y="' + r1(y(n) - geom.laneH * 0.35) +
        '" width="' + r1(bw + 0.5) + '" height="' + r1(geom.laneH * 0.7) + '" fill-opacity="' + (0.1 + 0.8 * c / max).toFixed(2) +
        '"><title>' + c + ' ' + esc(title) + '</title></rect>');
    });
  }

  var renders = 0;
  function render() {
    var started = performance.now();
    renders += 1;
    layout();
    var out = [], notes = [];
    var W = geom.width, H = geom.height, LH = geom.laneH;
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('height', H);
    out.push('<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#3465a4"/></marker>' +
      '<marker id="ahd" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#8e44ad"/></marker>' +
      '<clipPath id="clip"><rect x="' + ML + '" y="0" width="' + (W - ML - MR) + '" height="' + H + '"/></clipPath></defs>');
    // Axis.
    var step = niceStep(view.hi - view.lo);
    var digits = Math.max(0, Math.min(6, 6 - Math.floor(Math.log10(step))));
    out.push('<g class="axis">');
    for (var t = Math.ceil(view.lo / step) * step; t <= view.hi; t += step) {
      out.push('<line x1="' + r1(x(t)) + '" x2="' + r1(x(t)) + '" y1="' + (MT - 6) + '" y2="' + H + '"/><text x="' + r1(x(t) + 2) + '" y="' + (MT - 10) + '">' + fmtTime(t, digits) + '</text>');
    }
    out.push('</g>');
    // Lanes.
    geom.lanes.forEach(function (n) {
      out.push('<g class="lane" data-node="' + n + '"><line class="lane-line" x1="' + ML + '" x2="' + (W - MR) + '" y1="' + y(n) + '" y2="' + y(n) + '"/>' +
        '<text class="lane-label" x="8" y="' + (y(n) + 4) + '">n' + n + '</text></g>');
    });
    out.push('<g clip-path="url(#clip)">');
    var inView = function (s, e) { return e >= view.lo && s <= view.hi; };
    // Periods under everything.
    periods.forEach(function (p) {
      if (!showGroup[p.group] || !visible(p.n) || !inView(p.s, p.e)) { return; }
      var x1 = Math.max(ML - 2, x(p.s)), x2 = Math.min(W, x(p.e));
      var strength = p.strength === undefined ? '' : '" style="fill-opacity:' + (0.06 + 0.3 * p.strength).toFixed(2);
      out.push('<rect class="' + p.cls + strength + '" data-j="' + p.j + '" x="' + r1(x1) + '" y="' + r1(y(p.n) - LH * 0.45) + '" width="' + r1(Math.max(1, x2 - x1)) + '" height="' + r1(LH * 0.9) + '"/>');
    });
    // Quiet phase.
    quiet.forEach(function (q) {
      if (!inView(q.t, q.t)) { return; }
      out.push('<line class="quiet-line" data-j="' + q.j + '" x1="' + r1(x(q.t)) + '" x2="' + r1(x(q.t)) + '" y1="' + (MT - 4) + '" y2="' + H + '"/><text class="quiet-label" x="' + r1(x(q.t) + 3) + '" y="' + (H - 3) + '">quiet phase</text>');
    });
    // Client operations.
    if (showGroup.ops) {
      var vops = ops.filter(function (o) { return visible(o.n) && inView(o.s, o.t); });
      layer(out, 'ops', vops, function (o) { return o.n; }, function (o) { return o.s; }, function (o) {
        var yy = r1(y(o.n) + LH * 0.3);
        return '<line class="op-span op-' + esc(o.outcome) + '" data-j="' + o.j + '" x1="' + r1(x(o.s)) + '" x2="' + r1(Math.max(x(o.s) + 2, x(o.t))) + '" y1="' + yy + '" y2="' + yy + '"/>';
      }, notes, 'client operations');
    }
    // Timers.
    if (showGroup.timers) {
      var vt = timers.filter(function (m) { return visible(m.n) && inView(m.t, m.t); });
      layer(out, 'timer', vt, function (m) { return m.n; }, function (m) { return m.t; }, function (m) {
        return '<circle class="timer-mark" data-j="' + m.j + '" cx="' + r1(x(m.t)) + '" cy="' + r1(y(m.n) - LH * 0.22) + '" r="2"/>';
      }, notes, 'timers');
    }
    // Messages.
    var va = showGroup.messages ? arrows.filter(function (a) { return visible(a.a) && visible(a.b) && inView(a.s, a.t); }) : [];
    var labelArrows = va.length <= 50;
    layer(out, 'msg', va, function (a) { return a.b; }, function (a) { return a.t; }, function (a) {
      var x1 = r1(x(a.s)), y1 = r1(y(a.a)), x2 = r1(x(a.t)), y2 = r1(y(a.b));
      var s = '<line class="msg-arrow' + (a.dup ? ' dup' : '') + '" data-j="' + a.j + '" x1="' + x1 + '" y1="' + y1 + '" x2="' + x2 + '" y2="' + y2 + '" marker-end="url(#' + (a.dup ? 'ahd' : 'ah') + ')"/>';
      if (labelArrows && a.l) {
        s += '<text class="msg-label" x="' + r1((x1 + x2) / 2 + 3) + '" y="' + r1((y1 + y2) / 2 - 3) + '">' + esc(a.l) + '</text>';
      }
      return s;
    }, notes, 'delivered messages');
    var vd = showGroup.drops ? drops.filter(function (d) { return visible(d.a) && visible(d.b) && inView(d.s, d.t); }) : [];
    layer(out, 'drop', vd, function (d) { return d.a; }, function (d) { return d.t; }, function (d) {
      var x1 = r1(x(d.s)), y1 = r1(y(d.a)), x2 = r1(x(d.t)), y2 = r1(y(d.a) + (y(d.b) - y(d.a)) * 0.55);
      var c = 4;
      return '<line class="drop-line" data-j="' + d.j + '" x1="' + x1 + '" y1="' + y1 + '" x2="' + x2 + '" y2="' + y2 + '"/>' +
        '<path class="drop-mark" data-j="' + d.j + '" d="M' + (x2 - c) + ',' + (y2 - c) + 'L' + (x2 + c) + ',' + (y2 + c) + 'M' + (x2 - c) + ',' + (y2 + c) + 'L' + (x2 + c) + ',' + (y2 - c) + '"/>';
    }, notes, 'dropped messages');
    if (showGroup.duplicates) {
      var vu = dups.filter(function (d) { return visible(d.a) && inView(d.t, d.t); });
      layer(out, 'msg', vu, function (d) { return d.a; }, function (d) { return d.t; }, function (d) {
        return '<text class="dup-mark" data-j="' + d.j + '" x="' + r1(x(d.t) - 4) + '" y="' + r1(y(d.a) - 5) + '">2×</text>';
      }, notes, 'duplications');
    }
    // Point marks on the lanes.
    var vm = marks.filter(function (m) { return showGroup[m.group] && visible(m.n) && inView(m.t, m.t); });
    layer(out, 'marks', vm, function (m) { return m.n; }, function (m) { return m.t; }, function (m) {
      var cx = r1(x(m.t)), cy = r1(y(m.n)), s = 6;
      switch (m.cls) {
        case 'crash-mark':
          return '<path class="crash-mark" data-j="' + m.j + '" d="M' + (cx - s) + ',' + (cy - s) + 'L' + (cx + s) + ',' + (cy + s) + 'M' + (cx - s) + ',' + (cy + s) + 'L' + (cx + s) + ',' + (cy - s) + '"/>';
        case 'restart-mark':
          return '<path class="restart-mark" data-j="' + m.j + '" d="M' + cx + ',' + (cy - s) + 'L' + (cx + s) + ',' + (cy + s) + 'L' + (cx - s) + ',' + (cy + s) + 'z"/>';
        case 'disk-mark':
          // Above the lane, so that a crash at the same instant stays visible.
          cy = r1(cy - LH * 0.2);
          return '<path class="disk-mark" data-j="' + m.j + '" d="M' + cx + ',' + (cy - s) + 'L' + (cx + s) + ',' + cy + 'L' + cx + ',' + (cy + s) + 'L' + (cx - s) + ',' + cy + 'z"/>';
        case 'pause-mark':
        case 'resume-mark':
          return '<rect class="' + m.cls + '" data-j="' + m.j + '" x="' + (cx - 2) + '" y="' + (cy - s) + '" width="4" height="' + (2 * s) + '"/>';
        default:
          return '<circle class="' + m.cls + '" data-j="' + m.j + '" cx="' + cx + '" cy="' + cy + '" r="3"/>';
      }
    }, notes, 'lane marks');
    // Observations.
    if (showGroup.obs) {
      var vo = obs.filter(function (o) { return visible(o.n) && inView(o.t, o.t); });
      var labelObs = vo.length <= 120;
      layer(out, 'obs', vo, function (o) { return o.n; }, function (o) { return o.t; }, function (o) {
        var xx = r1(x(o.t)), yy = y(o.n);
        return '<line class="obs-tick" data-j="' + o.j + '" x1="' + xx + '" x2="' + xx + '" y1="' + r1(yy - LH * 0.38) + '" y2="' + r1(yy - LH * 0.08) + '"/>' +
          (labelObs ? '<text class="obs-label" x="' + (xx + 2) + '" y="' + r1(yy - LH * 0.28) + '">' + esc(o.l || '') + '</text>' : '');
      }, notes, 'observations');
    }
    // Violations and the events they cite.
    meta.violations.forEach(function (v, k) {
      var at = v.time !== null ? v.time : meta.window.last;
      if (at !== null && inView(at, at)) {
        out.push('<line class="violation-marker' + (v.time === null ? ' at-end' : '') + '" data-v="' + k + '" x1="' + r1(x(at)) + '" x2="' + r1(x(at)) + '" y1="' + (MT - 4) + '" y2="' + H + '"/>' +
          '<text class="violation-label" x="' + r1(x(at) + 3) + '" y="' + (MT + 8 + 12 * (k % 4)) + '">' + esc(v.kind) + '</text>');
      }
      v.cited.forEach(function (j) {
        var r = ev[j], n = laneOf(r);
        if (visible(n) && inView(r.t, r.t)) {
          out.push('<circle class="cited-mark" data-j="' + j + '" data-v="' + k + '" cx="' + r1(x(r.t)) + '" cy="' + r1(y(n)) + '" r="9"/>');
        }
      });
    });
    out.push('</g>');
    svg.innerHTML = out.join('');
    note.textContent = notes.length
      ? 'Over the drawing limit of ' + LIMIT.toLocaleString('en') + ' per kind in this view: ' + notes.join(', ') + ' — shown as density; zoom in to draw them one by one.'
      : '';
    document.getElementById('view-range').textContent = fmtTime(view.lo) + ' – ' + fmtTime(view.hi);
    if (selected !== null) { markSelected(); }
    document.body.dataset.renders = String(renders);
    document.body.dataset.lastRenderMs = (performance.now() - started).toFixed(1);
  }

  var pending = false;
  function schedule() {
    if (pending) { return; }
    pending = true;
    requestAnimationFrame(function () { pending = false; render(); });
  }

  // ---- Details and tooltip ------------------------------------------------------------------
  var details = document.getElementById('details');
  var tooltip = document.getElementById('tooltip');
  var selected = null;

  function summary(j) {
    var r = ev[j];
    return fmtTime(r.t) + ' ' + r.k + (r.l ? ' ' + r.l : '') + '\n' + rawLine(j);
  }
  function rawBlock(j, id) {
    return '<pre' + (id ? ' id="' + id + '"' : '') + '>' + esc(rawLine(j)) + '</pre>';
  }
  function showEvent(j) {
    var r = ev[j];
    var html = '<div id="details-head"><b>' + esc(r.k) + '</b> at ' + fmtTime(r.t) + ' · trace event #' + r.i + '</div>';
    html += rawBlock(j, 'details-json');
    if ((r.k === 'deliver' || r.k === 'drop' || r.k === 'duplicate') && r.s !== undefined) {
      html += '<div>sent at ' + fmtTime(r.s) + (r.k === 'deliver' ? ', in flight ' + ((r.t - r.s) / 1000).toFixed(3) + ' ms' : '') + '</div>';
      if (r.sp !== undefined) { html += rawBlock(r.sp); }
    }
    var op = null;
    if (r.k === 'invoke' || r.k === 'complete') {
      ops.forEach(function (o) { if (o.ji === j || o.jc === j) { op = o; } });
    }
    if (op) {
      if (op.ji !== null && op.ji !== j) { html += '<div>invoked:</div>' + rawBlock(op.ji); }
      if (op.jc !== null && op.jc !== j) { html += '<div>completed:</div>' + rawBlock(op.jc); }
      if (op.jc === null) { html += '<div>no completion in this window</div>'; }
    }
    meta.violations.forEach(function (v) {
      if (v.cited.indexOf(j) >= 0) {
        html += '<div class="cited-note">cited by the violation ' + esc(v.kind) + ': ' + esc(v.message) + '</div>';
      }
    });
    details.innerHTML = html;
  }
  function showViolation(k) {
    var v = meta.violations[k];
    var html = '<div id="details-head"><b>violation ' + esc(v.kind) + '</b> (checker ' + esc(v.checker) + ', property “' + esc(v.property) + '”)</div>';
    html += '<pre id="details-json">' + esc(v.message) + (v.time !== null ? '\nat ' + fmtTime(v.time) : '\njudged at the end of the run') + '</pre>';
    var cites = v.cites.map(function (c) {
      var inside = c.time >= lo && c.time <= hi;
      return 'n' + c.node + ' at ' + fmtTime(c.time) + (inside ? '' : ' (outside this window)');
    });
    if (cites.length) { html += '<div>the checker also cites: ' + esc(cites.join('; ')) + '</div>'; }
    html += '<div>cited events in this window (' + v.cited.length + '):</div>';
    v.cited.forEach(function (j) { html += '<pre class="cited-event" data-j="' + j + '">' + esc(summary(j)) + '</pre>'; });
    details.innerHTML = html;
  }
  function markSelected() {
    var old = svg.querySelectorAll('.selected');
    for (var i = 0; i < old.length; i++) { old[i].classList.remove('selected'); }
    var now = svg.querySelectorAll('[data-j="' + selected + '"]');
    for (var k = 0; k < now.length; k++) { now[k].classList.add('selected'); }
  }

  var drag = null, dragged = false;
  svg.addEventListener('click', function (e) {
    if (dragged) { dragged = false; return; }
    var el = e.target.closest('[data-j],[data-v]');
    if (!el) { return; }
    if (el.dataset.j !== undefined) {
      selected = Number(el.dataset.j);
      showEvent(selected);
      markSelected();
    } else {
      showViolation(Number(el.dataset.v));
    }
  });
  details.addEventListener('click', function (e) {
    var el = e.target.closest('[data-j]');
    if (el) {
      selected = Number(el.dataset.j);
      var t = ev[selected].t, span = view.hi - view.lo;
      view.lo = t - span / 2; view.hi = t + span / 2;
      render();
      showEvent(selected);
    }
  });
  svg.addEventListener('mousemove', function (e) {
    if (drag) { return; }
    var el = e.target.closest('[data-j],[data-v]');
    if (!el) { tooltip.hidden = true; return; }
    var text = el.dataset.j !== undefined ? summary(Number(el.dataset.j)) : meta.violations[Number(el.dataset.v)].message;
    tooltip.textContent = text.length > 600 ? text.slice(0, 600) + '…' : text;
    tooltip.hidden = false;
    tooltip.style.left = Math.min(e.clientX + 14, window.innerWidth - 530) + 'px';
    tooltip.style.top = (e.clientY + 14) + 'px';
  });
  svg.addEventListener('mouseleave', function () { tooltip.hidden = true; });

  // ---- Zoom and pan ---------------------------------------------------------------------------
  function timeAt(clientX) {
    var rect = svg.getBoundingClientRect();
    var px = (clientX - rect.left) * geom.width / rect.width;
    return view.lo + (px - ML) / (geom.width - ML - MR) * (view.hi - view.lo);
  }
  function zoom(factor, center) {
    var c = center === undefined ? (view.lo + view.hi) / 2 : center;
    var span = Math.max(10, (view.hi - view.lo) * factor);
    var frac = (c - view.lo) / (view.hi - view.lo);
    view.lo = c - frac * span;
    view.hi = view.lo + span;
    schedule();
  }
  svg.addEventListener('wheel', function (e) {
    e.preventDefault();
    zoom(Math.exp(e.deltaY * 0.0015), timeAt(e.clientX));
  }, { passive: false });
  svg.addEventListener('mousedown', function (e) {
    drag = { x: e.clientX, lo: view.lo, hi: view.hi };
    dragged = false;
  });
  window.addEventListener('mousemove', function (e) {
    if (!drag) { return; }
    var dx = e.clientX - drag.x;
    if (Math.abs(dx) > 3) { dragged = true; svg.classList.add('dragging'); tooltip.hidden = true; }
    if (!dragged) { return; }
    var rect = svg.getBoundingClientRect();
    var dt = dx * geom.width / rect.width / (geom.width - ML - MR) * (drag.hi - drag.lo);
    view.lo = drag.lo - dt; view.hi = drag.hi - dt;
    schedule();
  });
  window.addEventListener('mouseup', function () {
    drag = null;
    svg.classList.remove('dragging');
  });
  document.getElementById('zoom-in').addEventListener('click', function () { zoom(0.5); });
  document.getElementById('zoom-out').addEventListener('click', function () { zoom(2); });
  document.getElementById('zoom-fit').addEventListener('click', function () { view.lo = lo; view.hi = hi; schedule(); });
  function focusViolation(k) {
    var v = meta.violations[k];
    if (!v) { return; }
    var at = v.time !== null ? v.time : meta.window.last;
    var times = v.cited.map(function (j) { return ev[j].t; }).concat(at === null ? [] : [at]);
    if (times.length) {
      var a = Math.min.apply(null, times), b = Math.max.apply(null, times);
      var pad = Math.max(2000, (b - a) * 0.15);
      view.lo = a - pad; view.hi = b + pad;
      render();
    }
    showViolation(k);
  }
  document.getElementById('zoom-violation').addEventListener('click', function () { focusViolation(0); });
  document.getElementById('zoom-violation').disabled = meta.violations.length === 0;
  window.addEventListener('resize', schedule);

  // ---- First render ---------------------------------------------------------------------------
  timing.headerDone = performance.now();
  render();
  // `page.html#event=N` selects trace event N; `#violation=K` shows violation K.
  var wanted = /^#(event|violation)=(\d+)$/.exec(window.location.hash);
  if (wanted && wanted[1] === 'violation' && meta.violations[Number(wanted[2])]) {
    showViolation(Number(wanted[2]));
  } else if (wanted) {
    for (var w = 0; w < ev.length; w++) {
      if (ev[w].i === Number(wanted[2])) { selected = w; showEvent(w); markSelected(); break; }
    }
  }
  timing.rendered = performance.now();
  document.body.dataset.timing = JSON.stringify(timing);
  document.body.dataset.ready = '1';
  document.body.dataset.renderedMs = performance.now().toFixed(1);
  requestAnimationFrame(function () {
    setTimeout(function () { document.body.dataset.firstRenderMs = performance.now().toFixed(1); }, 0);
  });
})();
