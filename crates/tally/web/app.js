// Tally's dashboards: plain JavaScript, no build step, no CDN (docs/dashboards.md).
// The read key is kept in this tab's session storage and sent only in the Authorization header.
// Widgets poll their data endpoint each second with the ETag of what they show, so an unchanged
// widget costs a 304; charts are drawn with the vendored uPlot (MIT, /assets/uPlot.LICENSE).
"use strict";
(() => {
  const KEY = "tally.key";
  const POLL_MS = 1000;
  const NUMERIC = /^(BIGINT|INT|INTEGER|SMALLINT|DOUBLE|REAL|FLOAT|DECIMAL)/;
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2",
    "#db2777", "#65a30d", "#4b5563", "#ea580c", "#0d9488", "#9333ea"];
  const RANGES = [["", "Each widget's range"], ["-1 hours", "Last hour"],
    ["-24 hours", "Last 24 hours"], ["-7 days", "Last 7 days"], ["-30 days", "Last 30 days"],
    ["-90 days", "Last 90 days"], ["-1 years", "Last year"]];
  const app = document.getElementById("app");
  const notice = document.getElementById("notice");
  const signOut = document.getElementById("sign-out");
  let stop = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c);
    }
    return node;
  }

  const key = () => sessionStorage.getItem(KEY);

  function show(message) {
    notice.textContent = message || "";
    notice.hidden = !message;
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = Object.assign({ authorization: "Bearer " + key() }, opts.headers || {});
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 304) return { status: 304, etag: response.headers.get("etag") };
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.status + " " + response.statusText;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return { status: response.status, etag: response.headers.get("etag"), body };
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") {
      return v.toLocaleString("en-US", { maximumFractionDigits: Number.isInteger(v) ? 0 : 2 });
    }
    if (typeof v === "string" && /^-?\d+(\.\d+)?$/.test(v)) {
      return Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 });
    }
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  // ── Pages ───────────────────────────────────────────────────────────────────────────────

  function route() {
    if (stop) stop();
    stop = null;
    show("");
    if (!key()) {
      signIn();
      return;
    }
    signOut.hidden = false;
    const m = location.pathname.match(/^\/dashboards\/([^/]+)$/);
    if (m) dashboard(decodeURIComponent(m[1]));
    else if (location.pathname === "/explore") explore();
    else list();
  }

  function go(path) {
    history.pushState(null, "", path);
    route();
  }

  function signIn() {
    signOut.hidden = true;
    const input = el("input", { type: "password", id: "key", placeholder: "tly_r_…", autocomplete: "off" });
    const form = el("form", { class: "signin", id: "sign-in" },
      el("h1", {}, "Sign in"),
      el("p", { class: "muted" }, "Paste a read key of your tenant. It stays in this tab and is sent only to this server."),
      input,
      el("button", { class: "primary", type: "submit" }, "Sign in"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      try {
        await api("/v1/dashboards");
        route();
      } catch (err) {
        sessionStorage.removeItem(KEY);
        show(err.status === 401 || err.status === 403 ? "That key is not a valid read key." : err.message);
      }
    });
    app.replaceChildren(form);
    input.focus();
  }

  async function list() {
    app.replaceChildren(el("h1", {}, "Dashboards"));
    try {
      const { body } = await api("/v1/dashboards");
      if (!body.items.length) {
        app.append(el("p", { class: "muted" },
          "No dashboards yet: create one with POST /v1/dashboards and a manage key, or explore the views."));
        return;
      }
      app.append(el("ul", { class: "list", id: "dashboards" }, ...body.items.map((d) => el("li", {},
        el("a", { href: "/dashboards/" + encodeURIComponent(d.id), "data-nav": true }, d.name),
        el("span", { class: "muted" }, d.widgets + (d.widgets === 1 ? " widget" : " widgets"))))));
    } catch (err) {
      show(err.message);
    }
  }

  async function dashboard(id) {
    let d;
    try {
      d = (await api("/v1/dashboards/" + encodeURIComponent(id))).body;
    } catch (err) {
      show(err.message);
      return;
    }
    const picker = el("select", { id: "range", "aria-label": "Range" },
      ...RANGES.map(([v, label]) => el("option", { value: v }, label)));
    picker.value = new URLSearchParams(location.search).get("range") || "";
    const updated = el("span", { class: "muted", id: "updated" });
    const grid = el("div", { class: "grid" });
    app.replaceChildren(el("div", { class: "toolbar" }, el("h1", { id: "dashboard-name" }, d.name), picker, updated), grid);
    const cards = d.widgets.map((w, i) => {
      const card = el("section", { class: "card " + w.kind, "data-widget": String(i), "data-kind": w.kind },
        el("h2", {}, w.title), el("div", { class: "body" }, el("span", { class: "muted" }, "…")));
      grid.append(card);
      return { w, i, card, etag: null, chart: null, names: "" };
    });
    let alive = true;
    let timer = null;
    async function tick() {
      clearTimeout(timer);
      const range = picker.value ? "?from=" + encodeURIComponent(picker.value) + "&to=now" : "";
      await Promise.all(cards.map(async (c) => {
        try {
          const r = await api("/v1/dashboards/" + encodeURIComponent(id) + "/widgets/" + c.i + "/data" + range,
            { headers: c.etag ? { "if-none-match": c.etag } : {} });
          if (!alive || r.status === 304) return;
          c.etag = r.etag;
          render(c, r.body);
        } catch (err) {
          if (!alive) return;
          c.etag = null;
          c.card.querySelector(".body").replaceChildren(el("p", { class: "error" }, err.message));
        }
      }));
      if (!alive) return;
      updated.textContent = "live · " + new Date().toLocaleTimeString("en-GB");
      timer = setTimeout(tick, POLL_MS);
    }
    picker.addEventListener("change", () => {
      history.replaceState(null, "", location.pathname + (picker.value ? "?range=" + encodeURIComponent(picker.value) : ""));
      for (const c of cards) c.etag = null;
      tick();
    });
    stop = () => {
      alive = false;
      clearTimeout(timer);
      for (const c of cards) if (c.chart) c.chart.destroy();
    };
    tick();
  }

  async function explore() {
    let views;
    try {
      views = (await api("/v1/views")).body.items.filter((v) => v.kind === "live");
    } catch (err) {
      show(err.message);
      return;
    }
    app.replaceChildren(el("h1", {}, "Explore"));
    if (!views.length) {
      app.append(el("p", { class: "muted" }, "No live views yet."));
      return;
    }
    const view = el("select", { id: "view" }, ...views.map((v) => el("option", { value: v.name }, v.name)));
    const grain = el("select", { id: "grain" },
      ...["", "minute", "hour", "day", "week", "month"].map((g) => el("option", { value: g }, g || "as stored")));
    const group = el("select", { id: "group" });
    const value = el("select", { id: "value" });
    const range = el("select", { id: "explore-range" },
      ...[["", "All time"], ["1", "Last hour"], ["24", "Last 24 hours"], ["168", "Last 7 days"],
        ["720", "Last 30 days"]].map(([v, l]) => el("option", { value: v }, l)));
    const label = (text, control) => el("label", {}, text, control);
    const chart = { w: { kind: "line", query: {} }, card: null, chart: null, names: "" };
    const chartCard = el("section", { class: "card", id: "explore-chart" }, el("h2", {}, "Chart"), el("div", { class: "body" }));
    const rowsCard = el("section", { class: "card", id: "explore-rows" }, el("h2", {}, "Rows"), el("div", { class: "body" }));
    chart.card = chartCard;
    app.append(el("div", { class: "explore-form" },
      label("View", view), label("Grain", grain), label("Group by", group), label("Value", value),
      label("Range", range)), el("div", { class: "stack" }, chartCard, rowsCard));
    const current = () => views.find((v) => v.name === view.value);
    function fill() {
      const v = current();
      const keys = v.group_by.filter((g) => g !== v.time_column);
      group.replaceChildren(el("option", { value: "*" }, "every group column"),
        el("option", { value: "" }, "none"), ...keys.map((g) => el("option", { value: g }, g)));
      value.replaceChildren(...v.columns.filter((c) => !v.group_by.includes(c.name) && NUMERIC.test(c.type))
        .map((c) => el("option", { value: c.name }, c.name)));
      grain.disabled = !v.time_column;
      range.disabled = !v.time_column;
    }
    let alive = true;
    let timer = null;
    async function run() {
      clearTimeout(timer);
      const v = current();
      const p = new URLSearchParams();
      if (v.time_column && grain.value) p.set("grain", grain.value);
      if (group.value !== "*") p.set("group_by", [v.time_column, group.value].filter(Boolean).join(","));
      if (v.time_column && range.value) {
        p.set("from", new Date(Date.now() - Number(range.value) * 3600e3).toISOString());
      }
      try {
        const { body } = await api("/v1/views/" + encodeURIComponent(v.name) + "?" + p);
        if (!alive) return;
        chart.w.query.value = value.value;
        plot(chart, chartCard.querySelector(".body"), body);
        rowsCard.querySelector(".body").replaceChildren(table(body));
      } catch (err) {
        if (!alive) return;
        rowsCard.querySelector(".body").replaceChildren(el("p", { class: "error" }, err.message));
      }
      if (alive) timer = setTimeout(run, 2 * POLL_MS);
    }
    view.addEventListener("change", () => {
      fill();
      run();
    });
    for (const control of [grain, group, value, range]) control.addEventListener("change", run);
    stop = () => {
      alive = false;
      clearTimeout(timer);
      if (chart.chart) chart.chart.destroy();
    };
    fill();
    run();
  }

  // ── Widgets ─────────────────────────────────────────────────────────────────────────────

  function render(c, data) {
    const body = c.card.querySelector(".body");
    if (c.w.kind === "number") number(body, data);
    else if (c.w.kind === "table") body.replaceChildren(table(data));
    else plot(c, body, data);
  }

  function number(body, d) {
    const pct = d.change_pct;
    const delta = pct === null || pct === undefined
      ? el("span", { class: "muted" }, "no change to show")
      : el("span", { class: pct >= 0 ? "up" : "down" }, (pct >= 0 ? "▲ " : "▼ ") + Math.abs(pct).toFixed(1) + " %");
    body.replaceChildren(
      el("div", { class: "value", "data-value": JSON.stringify(d.value) }, fmt(d.value)),
      el("div", { class: "delta" }, delta, " vs ", el("span", { "data-previous": JSON.stringify(d.previous) }, fmt(d.previous)), " before"));
  }

  function table(data) {
    const rows = data.rows.slice(0, 500);
    const numeric = data.columns.map((c) => NUMERIC.test(c.type));
    return el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...data.columns.map((c) => el("th", {}, c.name)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {},
        ...r.map((v, i) => el("td", { class: numeric[i] ? "num" : null }, numeric[i] ? fmt(v) : v === null ? "–" : String(v))))))));
  }

  // One series per group: x is the first TIMESTAMP column, y the widget's value column (or
  // the first numeric one), groups are the other columns.
  function series(data, valueName) {
    const cols = data.columns;
    const t = cols.findIndex((c) => c.type === "TIMESTAMP");
    if (t < 0) return null;
    const numeric = cols.map((_, i) => i).filter((i) => i !== t && NUMERIC.test(cols[i].type));
    const named = valueName ? cols.findIndex((c) => c.name === valueName) : -1;
    const v = named >= 0 ? named : numeric[0];
    if (v === undefined) return null;
    const groups = cols.map((_, i) => i).filter((i) => i !== t && !numeric.includes(i));
    const xs = [...new Set(data.rows.map((r) => Date.parse(r[t]) / 1000))].sort((a, b) => a - b);
    const at = new Map(xs.map((x, i) => [x, i]));
    const byGroup = new Map();
    for (const r of data.rows) {
      const g = groups.map((i) => (r[i] === null ? "∅" : String(r[i]))).join(" · ") || cols[v].name;
      if (!byGroup.has(g)) byGroup.set(g, new Array(xs.length).fill(null));
      byGroup.get(g)[at.get(Date.parse(r[t]) / 1000)] = r[v] === null ? null : Number(r[v]);
    }
    const names = [...byGroup.keys()].slice(0, COLORS.length);
    return { xs, names, ys: names.map((n) => byGroup.get(n)) };
  }

  function plot(c, body, data) {
    const s = series(data, c.w.query && c.w.query.value);
    if (!s || !s.xs.length) {
      if (c.chart) c.chart.destroy();
      c.chart = null;
      body.replaceChildren(s ? el("p", { class: "muted" }, "No data in this range.") : table(data));
      return;
    }
    const payload = [s.xs, ...s.ys];
    const names = s.names.join("\u0000");
    if (c.chart && c.names === names) {
      c.chart.setData(payload);
      return;
    }
    if (c.chart) c.chart.destroy();
    const holder = el("div", { class: "chart" });
    body.replaceChildren(holder);
    const bars = c.w.kind === "bar";
    c.chart = new uPlot({
      width: Math.max(280, (c.card.clientWidth || 440) - 32),
      height: 240,
      scales: { x: { time: true } },
      series: [{}, ...s.names.map((n, i) => ({
        label: n,
        stroke: COLORS[i],
        fill: bars ? COLORS[i] + "aa" : undefined,
        paths: bars ? uPlot.paths.bars({ size: [0.8, 48] }) : undefined,
        points: { show: !bars && s.xs.length < 60 },
        spanGaps: !bars,
      }))],
    }, payload, holder);
    c.names = names;
  }

  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[data-nav]");
    if (a && a.origin === location.origin) {
      e.preventDefault();
      go(a.pathname + a.search);
    }
  });
  window.addEventListener("popstate", route);
  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    go("/");
  });
  route();
})();
