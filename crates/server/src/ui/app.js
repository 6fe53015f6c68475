// The r2reasoner trace viewer. Trace text is model output, so it is untrusted: it reaches
// the page only through text nodes (append, textContent) and setAttribute, never as HTML.
"use strict";

(function () {
  const KEY = "r2reasoner.key";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  // Summaries from the listing, by trace id: the detail view shows their key and latency.
  const summaries = new Map();
  let next = null;

  // An element with attributes and children (strings become text nodes).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c !== undefined && c !== null) e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const num = (x) => (typeof x === "number" && isFinite(x) ? x : null);
  const str = (x) => (typeof x === "string" ? x : x === undefined || x === null ? "" : String(x));

  function cost(x) {
    const n = num(x);
    if (n === null) return "—";
    return "$" + (n !== 0 && Math.abs(n) < 0.001 ? n.toExponential(2) : n.toFixed(4));
  }

  function ms(x) {
    const n = num(x);
    if (n === null) return "—";
    return n >= 1000 ? (n / 1000).toFixed(2) + " s" : n.toFixed(0) + " ms";
  }

  function when(unix) {
    const n = num(unix);
    return n === null ? "—" : new Date(n * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
  }

  function status(text, cls) {
    const s = $("status");
    s.textContent = text || "";
    s.className = cls || "";
  }

  function shown(id) {
    return "#trace=" + encodeURIComponent(id);
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = "Bearer " + key;
    const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try {
      body = await r.json();
    } catch (_) {
      body = null;
    }
    if (!r.ok) {
      const msg = (body && body.error && body.error.message) || r.status + " " + r.statusText;
      const err = new Error(str(msg));
      err.status = r.status;
      throw err;
    }
    return body;
  }

  function failed(what, e) {
    if (e.status === 401) {
      status("The gateway needs an API key: enter it above.", "error");
      $("key").focus();
    } else {
      status(what + ": " + e.message, "error");
    }
  }

  // ---- recent requests ----

  function requestRow(t) {
    const id = str(t.id);
    summaries.set(id, t);
    const answer = str(t.answer) + (t.answer_truncated ? "…" : "");
    const st = str(t.status);
    return el(
      "tr",
      { class: "request", "data-trace": id },
      el("td", null, when(t.created)),
      el("td", null, el("a", { href: shown(id) }, id)),
      el("td", null, t.key === null || t.key === undefined ? "—" : str(t.key)),
      el("td", null, str(t.model)),
      el("td", null, str(t.policy)),
      el("td", { class: "status-" + (st === "ok" ? "ok" : "bad") }, st),
      el("td", { class: "answer" }, answer),
      el("td", { class: "num" }, cost(t.total_cost_usd)),
      el("td", { class: "num" }, ms(t.latency_ms)),
      el("td", { class: "num" }, str(t.steps)),
      el("td", { class: "num" }, str(t.escalations)),
    );
  }

  async function loadRecent(more) {
    const q = more && next ? "?limit=50&before=" + encodeURIComponent(next) : "?limit=50";
    try {
      const page = await api("/v1/traces" + q);
      const body = $("requests").tBodies[0];
      if (!more) body.replaceChildren();
      for (const t of page.data || []) body.append(requestRow(t));
      next = page.has_more ? str(page.next) : null;
      $("more").hidden = !next;
      if (!(page.data || []).length && !more) {
        body.append(el("tr", null, el("td", { colspan: 11 }, "no requests yet")));
      }
      status("");
    } catch (e) {
      failed("recent requests", e);
    }
  }

  // ---- one request ----

  // Columns by depth in the plan: a step sits one column right of its deepest dependency;
  // steps that name none (other than the plan itself) hang off the plan, dashed.
  function layout(steps) {
    const index = new Map();
    steps.forEach((s, i) => index.set(str(s.id), i));
    const plan = index.get("decompose");
    const deps = steps.map((s, i) => {
      const named = (Array.isArray(s.depends_on) ? s.depends_on : [])
        .map((d) => index.get(str(d)))
        .filter((j) => j !== undefined && j !== i);
      const implied = named.length === 0 && plan !== undefined && plan !== i;
      return { named, implied: implied ? [plan] : [] };
    });
    const depth = steps.map(() => 0);
    // Bounded relaxation: terminates on any input, cycles included.
    for (let round = 0; round < steps.length; round++) {
      let changed = false;
      deps.forEach((d, i) => {
        for (const j of d.named.concat(d.implied)) {
          if (depth[j] + 1 > depth[i] && depth[j] + 1 <= steps.length) {
            depth[i] = depth[j] + 1;
            changed = true;
          }
        }
      });
      if (!changed) break;
    }
    return { deps, depth };
  }

  function dag(steps) {
    const { deps, depth } = layout(steps);
    const W = 150, H = 40, DX = 190, DY = 56, PAD = 10;
    const rows = new Map();
    const pos = steps.map((s, i) => {
      const row = rows.get(depth[i]) || 0;
      rows.set(depth[i], row + 1);
      return { x: PAD + depth[i] * DX, y: PAD + row * DY };
    });
    const width = PAD * 2 + (Math.max(0, ...depth) * DX) + W;
    const height = PAD * 2 + (Math.max(1, ...rows.values()) - 1) * DY + H;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "dag" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
    defs.append(marker);
    root.append(defs);
    deps.forEach((d, i) => {
      const edge = (j, cls) => {
        const a = pos[j], b = pos[i];
        root.append(svg("path", {
          class: "edge " + cls,
          d: `M ${a.x + W} ${a.y + H / 2} C ${a.x + W + 20} ${a.y + H / 2}, ${b.x - 20} ${b.y + H / 2}, ${b.x} ${b.y + H / 2}`,
          "marker-end": "url(#arrow)",
        }));
      };
      d.named.forEach((j) => edge(j, "named"));
      d.implied.forEach((j) => edge(j, "implied"));
    });
    steps.forEach((s, i) => {
      const g = svg("g", { class: "node", "data-step": str(s.id), transform: `translate(${pos[i].x} ${pos[i].y})` });
      g.append(svg("title", {}, str(s.id) + " — " + str(s.model) + "\n" + str(s.text)));
      g.append(svg("rect", { width: W, height: H, rx: 6 }));
      g.append(svg("text", { x: 8, y: 16, class: "id" }, str(s.id).slice(0, 22)));
      g.append(svg("text", { x: 8, y: 32, class: "model" }, str(s.model).slice(0, 24)));
      root.append(g);
    });
    return root;
  }

  function stepRows(s) {
    const conf = num(s.confidence);
    const id = str(s.id);
    const deps = Array.isArray(s.depends_on) ? s.depends_on.map(str).join(", ") : "";
    const head = el(
      "tr",
      { class: "step", "data-step": id, "data-model": str(s.model) },
      el("td", { class: "step-id" }, id),
      el("td", null, deps || "—"),
      el("td", { class: "step-model" }, str(s.model)),
      el("td", { class: "num" }, str(s.input_tokens)),
      el("td", { class: "num" }, str(s.output_tokens)),
      el("td", { class: "num" }, cost(s.cost_usd)),
      el("td", { class: "num" }, ms(s.latency_ms)),
      el("td", { class: "num" }, conf === null ? "—" : conf.toFixed(3)),
    );
    const text = el(
      "tr",
      { class: "step-text", "data-step": id },
      el("td", { colspan: 8 },
        el("div", { class: "io" },
          el("div", null, el("h4", null, "in"), el("pre", { class: "text-in" }, str(s.text))),
          el("div", null, el("h4", null, "out"), el("pre", { class: "text-out" }, str(s.output))))),
    );
    return [head, text];
  }

  function showTrace(id, t) {
    const summary = summaries.get(id) || {};
    $("trace-id").textContent = id;
    const head = $("trace-head");
    head.replaceChildren();
    const item = (k, v, cls) => head.append(el("dt", null, k), el("dd", { class: cls }, v));
    item("policy", str(t.policy));
    item("status", str(t.status || "ok"));
    item("answer", str(t.answer), "answer-full");
    item("cost", cost(t.total_cost_usd));
    item("latency", ms(summary.latency_ms));
    if (summary.key !== undefined) item("key", summary.key === null ? "—" : str(summary.key));
    if (t.error && t.error.message) item("error", str(t.error.message));
    const warnings = $("trace-warnings");
    warnings.replaceChildren();
    for (const w of Array.isArray(t.warnings) ? t.warnings : []) {
      const text = str(w);
      warnings.append(el("li", { class: text.includes("escalated to") ? "escalation" : "warning" }, text));
    }
    const steps = Array.isArray(t.steps) ? t.steps.filter((s) => s && typeof s === "object") : [];
    $("dag").replaceChildren(steps.length ? dag(steps) : el("p", null, "no steps"));
    const body = $("steps").tBodies[0];
    body.replaceChildren();
    for (const s of steps) body.append(...stepRows(s));
    $("trace").hidden = false;
  }

  async function route() {
    const m = /^#trace=(.+)$/.exec(location.hash);
    if (!m) {
      $("trace").hidden = true;
      return;
    }
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch (_) {
      status("not a trace id", "error");
      return;
    }
    try {
      showTrace(id, await api("/v1/traces/" + encodeURIComponent(id)));
      status("");
    } catch (e) {
      failed("trace " + id, e);
    }
  }

  // ---- spend ----

  function chart(rows) {
    const totals = new Map();
    for (const r of rows) {
      const start = num(r.start);
      if (start === null) continue;
      totals.set(start, (totals.get(start) || 0) + (num(r.cost_usd) || 0));
    }
    const bars = [...totals.entries()].sort((a, b) => a[0] - b[0]);
    if (!bars.length) return el("p", null, "no spend in this window");
    const max = Math.max(...bars.map((b) => b[1])) || 1;
    const BW = 24, GAP = 6, HT = 120;
    const width = bars.length * (BW + GAP) + GAP;
    const root = svg("svg", { width, height: HT + 20, viewBox: `0 0 ${width} ${HT + 20}`, role: "img", class: "chart" });
    bars.forEach(([start, total], i) => {
      const h = Math.max(1, (total / max) * HT);
      const g = svg("g", {});
      g.append(svg("title", {}, when(start) + ": " + cost(total)));
      g.append(svg("rect", { x: GAP + i * (BW + GAP), y: HT - h, width: BW, height: h }));
      root.append(g);
    });
    return root;
  }

  async function loadSpend() {
    const bucket = $("bucket").value === "hour" ? "hour" : "day";
    try {
      const s = await api("/v1/spend?bucket=" + bucket);
      const rows = Array.isArray(s.data) ? s.data : [];
      $("spend-chart").replaceChildren(chart(rows));
      const body = $("spend-table").tBodies[0];
      body.replaceChildren();
      for (const r of rows) {
        body.append(el(
          "tr",
          { class: "spend", "data-key": r.key === null ? "" : str(r.key), "data-model": str(r.model) },
          el("td", null, when(r.start)),
          el("td", null, r.key === null || r.key === undefined ? "—" : str(r.key)),
          el("td", null, str(r.model)),
          el("td", { class: "num" }, str(r.requests)),
          el("td", { class: "num" }, str(r.calls)),
          el("td", { class: "num" }, str(r.input_tokens)),
          el("td", { class: "num" }, str(r.output_tokens)),
          el("td", { class: "num" }, cost(r.cost_usd)),
        ));
      }
    } catch (e) {
      failed("spend", e);
    }
  }

  function loadAll() {
    loadSpend();
    // The listing first: the trace view shows the listed key and latency.
    loadRecent(false).then(route);
  }

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    $("key").value = "";
    if (key) sessionStorage.setItem(KEY, key);
    loadAll();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    status("key forgotten");
  });
  $("close").addEventListener("click", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", location.pathname);
    $("trace").hidden = true;
  });
  $("refresh").addEventListener("click", () => loadRecent(false));
  $("more").addEventListener("click", () => loadRecent(true));
  $("bucket").addEventListener("change", loadSpend);
  window.addEventListener("hashchange", route);
  loadAll();
})();
