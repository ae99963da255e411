// Shopfloor dashboard: a single page over the gateway's REST API (docs/DASHBOARD.md).
// No framework, no build step, nothing loaded from outside the gateway. Sign-in is by user name
// and password: the session is an HttpOnly cookie this script never sees; its CSRF token is
// kept in memory only and sent as X-CSRF-Token on POST, PUT and DELETE. localStorage holds a
// "signed in" hint (no credential) so a reload asks the gateway for the session. Every action
// the page offers is also enforced by the API.
"use strict";

(function () {
  const I18N = window.SF_I18N;
  const LANGS = ["zh-CN", "en"];
  const app = {
    csrf: null, // the session's CSRF token (memory only)
    session: null,
    lang: LANGS.includes(localStorage.getItem("sf_lang")) ? localStorage.getItem("sf_lang") : "zh-CN",
    period: sessionStorage.getItem("sf_period") || "today",
    custom: JSON.parse(sessionStorage.getItem("sf_custom") || "null"),
    entities: [],
    charts: [],
    refresh: null, // what the live stream re-runs
    events: null, // AbortController of the live stream
    liveOn: false,
    gen: 0, // route generation: a page whose data arrives after a newer route draws nothing
  };
  window.sfApp = app; // for tests and for the curious

  // ----------------------------------------------------------------------------------------
  // Helpers

  const t = (k) => {
    const v = I18N[app.lang][k];
    return v === undefined ? k : v;
  };
  const stateName = (s) => (I18N[app.lang].states[s] || s);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function fmt(v, unit) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "boolean") return v ? t("yes") : t("no");
    if (unit === "ratio") return (v * 100).toFixed(1) + "%";
    const a = Math.abs(v);
    const digits = a >= 1000 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
    return v.toLocaleString(app.lang, { maximumFractionDigits: digits });
  }
  const pct = (v) => (v === null || v === undefined ? "—" : (v * 100).toFixed(0) + "%");
  // Text into HTML (ECharts tooltips are HTML; entity names come from the registry).
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const when = (ms) => (ms ? new Date(ms).toLocaleString(app.lang) : "—");

  function name(e, fallback) {
    if (!e) return fallback || "";
    const n = app.lang === "en" ? (e.name_en || e.name_zh) : (e.name_zh || e.name_en);
    return n || e.id || fallback || "";
  }
  const entity = (id) => app.entities.find((e) => e.id === id);
  const indName = (ind, id) => (app.lang === "en" ? ind.name_en : ind.name_zh) || id;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  const UNSAFE = ["POST", "PUT", "DELETE"];
  const SIGNED_IN = "sf_signed_in"; // a hint in localStorage, not a credential

  async function api(path, opts) {
    const o = Object.assign({ credentials: "same-origin" }, opts || {});
    o.headers = Object.assign({}, o.headers);
    if (UNSAFE.includes((o.method || "GET").toUpperCase()) && app.csrf) o.headers["X-CSRF-Token"] = app.csrf;
    const r = await fetch(path, o);
    if (r.status === 401) {
      sessionEnded();
      throw new ApiError(401, t("session_expired"));
    }
    const ct = r.headers.get("content-type") || "";
    const body = ct.includes("json") ? await r.json() : await r.blob();
    if (!r.ok) {
      const msg = (body && body.error) || r.statusText;
      throw new ApiError(r.status, r.status === 403 ? `${t("forbidden")}: ${msg}` : msg);
    }
    return body;
  }

  function can(permission) {
    return !!app.session && app.session.permissions.includes(permission);
  }

  // ----------------------------------------------------------------------------------------
  // Period

  function iso(d) {
    // Local time with offset (the API takes RFC 3339 with offset).
    const p = (n) => String(n).padStart(2, "0");
    const off = -d.getTimezoneOffset();
    const sign = off >= 0 ? "+" : "-";
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${sign}${p(Math.floor(Math.abs(off) / 60))}:${p(Math.abs(off) % 60)}`;
  }

  // The gateway's data clock (GET /api/v1/session `clock`): real time, or in the demo a
  // simulated clock that runs `speed` × until it catches up with real time.
  function nowMs() {
    const c = app.session && app.session.clock;
    if (!c || typeof c.now_ms !== "number") return Date.now();
    const ahead = c.now_ms + (Date.now() - c.fetched_at) * (c.speed || 1);
    return Math.min(ahead, Date.now());
  }

  // A period that reaches into the future ends now (at the next whole minute): time that has
  // not happened yet is not offline time.
  function periodRange() {
    const [f, to] = periodBounds();
    const now = Math.ceil(nowMs() / 60000) * 60000;
    return [f, to.getTime() > now ? new Date(now) : to];
  }

  function periodBounds() {
    const now = new Date(nowMs());
    const day = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const tomorrow = new Date(day.getTime() + 86400000);
    switch (app.period) {
      case "7d": return [new Date(day.getTime() - 6 * 86400000), tomorrow];
      case "month": return [new Date(now.getFullYear(), now.getMonth(), 1), tomorrow];
      case "lastmonth": return [new Date(now.getFullYear(), now.getMonth() - 1, 1), new Date(now.getFullYear(), now.getMonth(), 1)];
      case "year": return [new Date(now.getFullYear(), 0, 1), tomorrow];
      case "custom":
        if (app.custom) return [new Date(app.custom[0]), new Date(app.custom[1])];
        return [day, tomorrow];
      default: return [day, tomorrow];
    }
  }

  function periodQuery(id) {
    const [f, to] = periodRange();
    return `entity=${encodeURIComponent(id)}&from=${encodeURIComponent(iso(f))}&to=${encodeURIComponent(iso(to))}`;
  }

  // ----------------------------------------------------------------------------------------
  // Charts

  function chart(container, option) {
    const c = window.echarts.init(container, null, { locale: app.lang === "en" ? "EN" : "ZH", renderer: "canvas" });
    c.setOption(Object.assign({ animation: false, textStyle: { fontFamily: "inherit" } }, option));
    app.charts.push(c);
    return c;
  }

  function disposeCharts() {
    for (const c of app.charts) c.dispose();
    app.charts = [];
  }

  window.addEventListener("resize", () => app.charts.forEach((c) => c.resize()));

  const STATE_COLORS = {
    producing: "#2e9d5b", setup: "#e0a526", delay: "#d9622b", idle: "#9aa5b1",
    planned_down: "#5b7db1", offline: "#3b3f46",
  };
  const STATES = ["producing", "setup", "delay", "idle", "planned_down", "offline"];

  // ----------------------------------------------------------------------------------------
  // Layout

  function header() {
    const nav = el("nav", { class: "nav" });
    const park = app.entities.find((e) => e.kind === "park");
    if (park) nav.append(el("a", { href: "#/park/" + park.id, "data-nav": "park" }, t("nav_park")));
    if (can("evidence")) nav.append(el("a", { href: "#/reports", "data-nav": "reports" }, t("nav_reports")));
    if (can("inputs_write")) nav.append(el("a", { href: "#/inputs", "data-nav": "inputs" }, t("nav_inputs")));

    const period = el("select", { id: "period", "aria-label": t("period"), onchange: (e) => {
      app.period = e.target.value;
      sessionStorage.setItem("sf_period", app.period);
      if (app.period !== "custom") route();
      else header();
    } }, ["today", "7d", "month", "lastmonth", "year", "custom"].map((p) =>
      el("option", { value: p, selected: app.period === p }, t("p_" + p))));
    const custom = app.period === "custom" ? customPeriod() : null;

    const lang = el("select", { id: "lang", "aria-label": t("language"), onchange: (e) => setLang(e.target.value) },
      el("option", { value: "zh-CN", selected: app.lang === "zh-CN" }, "中文"),
      el("option", { value: "en", selected: app.lang === "en" }, "English"));

    const user = app.session
      ? el("span", { class: "user", id: "user" }, `${app.session.name} · ${t("roles")[app.session.role] || app.session.role}`)
      : null;
    const out = app.session ? el("button", { id: "logout", class: "link", onclick: signOut }, t("logout")) : null;
    const liveDot = el("span", { id: "live", class: "live" + (app.liveOn ? " on" : ""), title: app.liveOn ? t("live") : t("live_off") }, t("live"));

    const h = document.getElementById("top");
    h.replaceChildren(...[
      el("a", { class: "brand", href: "#/" }, el("img", { src: "/assets/favicon.svg", alt: "" }), t("app_title")),
      app.session ? nav : null,
      el("div", { class: "spacer" }),
      app.session ? el("label", { class: "ctl" }, t("period"), " ", period) : null,
      custom,
      el("label", { class: "ctl" }, t("language"), " ", lang),
      app.session ? liveDot : null,
      user, out].filter((x) => x));
    document.documentElement.lang = app.lang;
    document.title = t("app_title");
  }

  function customPeriod() {
    const [f, to] = periodRange();
    const d = (x) => iso(x).slice(0, 10);
    const a = el("input", { type: "date", id: "from", value: d(f) });
    const b = el("input", { type: "date", id: "to", value: d(to) });
    return el("span", { class: "ctl" }, t("from"), " ", a, " ", t("to"), " ", b, " ",
      el("button", { onclick: () => {
        if (!a.value || !b.value) return;
        app.custom = [a.value + "T00:00:00", b.value + "T00:00:00"];
        sessionStorage.setItem("sf_custom", JSON.stringify(app.custom));
        route();
      } }, t("apply")));
  }

  function setLang(l) {
    app.lang = LANGS.includes(l) ? l : "zh-CN";
    localStorage.setItem("sf_lang", app.lang);
    header();
    route();
  }

  function main() { return document.getElementById("main"); }

  function card(title, ...body) {
    return el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...body);
  }

  function showError(e) {
    const m = main();
    m.replaceChildren(el("div", { class: "error", role: "alert" }, `${t("error")}: ${e.message}`));
  }

  function breadcrumbs(id) {
    const parts = id.split("/");
    const out = el("div", { class: "crumbs" });
    for (let i = 1; i <= parts.length; i++) {
      const pid = parts.slice(0, i).join("/");
      const e = entity(pid);
      const href = !e ? null : e.kind === "park" ? "#/park/" + pid : e.kind === "equipment" ? "#/equipment/" + pid : "#/entity/" + pid;
      if (i > 1) out.append(" › ");
      out.append(href ? el("a", { href }, name(e, pid)) : pid);
    }
    return out;
  }

  // ----------------------------------------------------------------------------------------
  // Traffic lights: met → green; not met but within 10% of the target → amber; else red;
  // no value or no target → grey.

  function light(ind) {
    if (!ind || !ind.target || ind.value === null || ind.value === undefined) return "grey";
    if (ind.target.met === true) return "green";
    if (ind.target.met === null || ind.target.met === undefined) return "grey";
    const tv = ind.target.value;
    const v = ind.value;
    if (typeof tv === "number" && tv !== 0) {
      const gap = ind.target.comparison === "le" ? (v - tv) / Math.abs(tv) : (tv - v) / Math.abs(tv);
      if (gap <= 0.1) return "amber";
    }
    return "red";
  }
  const LIGHT_LABEL = { green: "met", amber: "near", red: "not_met", grey: "unknown" };

  function lightEl(ind) {
    const l = light(ind);
    return el("span", { class: "light " + l, title: t(LIGHT_LABEL[l]), "data-light": l }, t(LIGHT_LABEL[l]));
  }

  function targetText(ind) {
    if (!ind || !ind.target) return "—";
    const c = { ge: "≥", le: "≤", change_le: "Δ≤", change_ge: "Δ≥" }[ind.target.comparison] || "";
    const v = ind.unit === "ratio" || ind.target.comparison.startsWith("change") ? pct(ind.target.value) : fmt(ind.target.value, ind.unit);
    return `${c} ${v} (${ind.target.year})`;
  }

  function indCell(ind) {
    if (!ind) return el("td", { class: "num" }, "—");
    return el("td", { class: "num" }, fmt(ind.value, ind.unit), " ", el("small", {}, ind.unit === "ratio" ? "" : ind.unit));
  }

  function completenessBar(c) {
    const v = c === null || c === undefined ? 0 : c;
    return el("span", { class: "bar", title: pct(c) }, el("span", { class: "track" }, el("span", { class: "fill", "data-w": v })), pct(c));
  }

  function applyBars(root) {
    // Widths set through the CSSOM (the page's CSP forbids inline style attributes).
    root.querySelectorAll(".bar .fill[data-w]").forEach((s) => {
      s.style.width = Math.max(0, Math.min(1, Number(s.dataset.w))) * 100 + "%";
    });
  }

  // ----------------------------------------------------------------------------------------
  // Pages

  const PARK_KEYS = ["key_process_nc_rate", "energy_per_value_added", "land_output_intensity", "oee"];

  async function parkPage(id) {
    const gen = app.gen;
    const m = main();
    m.replaceChildren(breadcrumbs(id), el("p", { class: "muted" }, t("loading")));
    const ov = await api("/api/v1/overview?" + periodQuery(id));
    if (gen !== app.gen) return;
    disposeCharts();
    const p = ov.indicators.indicators;

    const counts = el("div", { class: "tiles" }, ["digital_workshop_count", "smart_factory_count", "green_factory_count"].map((k) => {
      const ind = p[k];
      return el("div", { class: "tile", "data-indicator": k },
        el("div", { class: "tile-label" }, ind ? indName(ind, k) : k),
        el("div", { class: "tile-value" }, ind ? fmt(ind.value) : "—"),
        el("div", { class: "tile-sub" }, t("target"), ": ", targetText(ind), " ", lightEl(ind)));
    }));

    const parkTiles = el("div", { class: "tiles" }, PARK_KEYS.map((k) => {
      const ind = p[k];
      return el("div", { class: "tile", "data-indicator": k },
        el("div", { class: "tile-label" }, ind ? indName(ind, k) : k),
        el("div", { class: "tile-value" }, ind ? fmt(ind.value, ind.unit) : "—", " ", el("small", {}, ind && ind.unit !== "ratio" ? ind.unit : "")),
        el("div", { class: "tile-sub" }, t("target"), ": ", targetText(ind), " ", lightEl(ind)),
        el("div", { class: "tile-sub" }, t("completeness"), ": ", completenessBar(ind && ind.completeness)));
    }));

    const head = el("tr", {}, el("th", {}, t("enterprise")),
      PARK_KEYS.map((k) => {
        const any = ov.enterprises.map((e) => e.indicators[k]).find((x) => x);
        return el("th", { class: "num" }, any ? indName(any, k) : k);
      }),
      el("th", {}, t("completeness")));
    const rows = ov.enterprises.map((r) => {
      const e = entity(r.entity);
      const comp = PARK_KEYS.map((k) => r.indicators[k] && r.indicators[k].completeness).filter((x) => typeof x === "number");
      const c = comp.length ? comp.reduce((a, b) => a + b, 0) / comp.length : null;
      return el("tr", { "data-entity": r.entity },
        el("td", {}, el("a", { href: "#/entity/" + r.entity }, name(e, r.entity))),
        PARK_KEYS.map((k) => {
          const ind = r.indicators[k];
          const td = indCell(ind);
          td.prepend(lightEl(ind), " ");
          if (ind && ind.target) td.append(el("div", { class: "tgt" }, targetText(ind)));
          return td;
        }),
        el("td", {}, completenessBar(c)));
    });
    const table = el("table", { class: "grid", id: "enterprises" }, el("thead", {}, head), el("tbody", {}, rows));

    const chartBox = el("div", { class: "chart", id: "chart-epva" });
    m.replaceChildren(
      breadcrumbs(id),
      el("h1", {}, name(entity(id), id), el("small", { class: "muted" }, " · ", ov.indicators.from, " — ", ov.indicators.to)),
      card(t("certified_counts"), counts),
      card(t("key_indicators"), parkTiles),
      card(t("enterprises"), table),
      card(t("energy_per_va_chart"), chartBox),
      allIndicators(p));
    applyBars(m);

    const names = ov.enterprises.map((r) => name(entity(r.entity), r.entity));
    const vals = ov.enterprises.map((r) => (r.indicators.energy_per_value_added || {}).value ?? null);
    const targ = p.energy_per_value_added && p.energy_per_value_added.target;
    chart(chartBox, {
      tooltip: { trigger: "axis" },
      grid: { left: 60, right: 30, top: 30, bottom: 40 },
      xAxis: { type: "category", data: names },
      yAxis: { type: "value", name: "tce/万元" },
      series: [{
        type: "bar", data: vals, itemStyle: { color: "#3d7bd9" },
        markLine: targ ? { symbol: "none", data: [{ yAxis: targ.value, name: t("target") }], lineStyle: { color: "#d9622b" } } : undefined,
      }],
    });
  }

  function allIndicators(inds) {
    const rows = Object.entries(inds).map(([k, ind]) => el("tr", { "data-indicator": k },
      el("td", {}, indName(ind, k), el("div", { class: "id" }, k)),
      indCell(ind),
      el("td", {}, targetText(ind), " ", ind.target ? lightEl(ind) : null),
      el("td", {}, completenessBar(ind.completeness))));
    const table = el("table", { class: "grid compact", id: "all-indicators" },
      el("thead", {}, el("tr", {}, el("th", {}, t("indicator")), el("th", { class: "num" }, t("value")), el("th", {}, t("target")), el("th", {}, t("completeness")))),
      el("tbody", {}, rows));
    return el("details", { class: "card" }, el("summary", {}, t("all_indicators")), table);
  }

  async function entityPage(id) {
    const gen = app.gen;
    const m = main();
    const e = entity(id);
    m.replaceChildren(breadcrumbs(id), el("p", { class: "muted" }, t("loading")));
    const q = periodQuery(id);
    const now = new Date(nowMs());
    const tl = `entity=${encodeURIComponent(id)}&from=${encodeURIComponent(iso(new Date(now.getTime() - 86400000)))}&to=${encodeURIComponent(iso(now))}`;
    const kind = e ? e.kind : "";
    const assessKind = kind === "workshop" ? "digital_workshop" : kind === "enterprise" ? "green_factory" : null;
    const [ov, timeline, series, assess] = await Promise.all([
      api("/api/v1/overview?" + q),
      api("/api/v1/timeline?" + tl),
      api("/api/v1/indicators/oee/series?" + q + "&step=day"),
      assessKind ? api(`/api/v1/assessments/${assessKind}?` + q).catch((err) => ({ error: err.message })) : Promise.resolve(null),
    ]);
    if (gen !== app.gen) return;
    disposeCharts();
    const ind = ov.indicators.indicators;

    // OEE and factors.
    const oeeTiles = el("div", { class: "tiles" }, ["oee", "availability", "performance", "quality_rate", "defect_rate"].map((k) => {
      const x = ind[k];
      return el("div", { class: "tile", "data-indicator": k },
        el("div", { class: "tile-label" }, x ? indName(x, k) : k),
        el("div", { class: "tile-value" }, x ? fmt(x.value, x.unit) : "—"),
        el("div", { class: "tile-sub" }, t("completeness"), ": ", completenessBar(x && x.completeness)));
    }));
    const lossBox = el("div", { class: "chart small", id: "chart-loss" });
    const timelineBox = el("div", { class: "chart tall", id: "chart-timeline" });
    const seriesBox = el("div", { class: "chart small", id: "chart-oee" });
    const energyBox = el("div", { class: "chart small", id: "chart-energy" });

    // Energy by carrier.
    const carrierRows = ov.carriers.map((c) => el("tr", { "data-carrier": c.carrier },
      el("td", {}, app.lang === "en" ? c.name_en : c.name_zh),
      el("td", { class: "num" }, fmt(c.consumption), " ", el("small", {}, c.unit)),
      el("td", { class: "num" }, c.kgce_per_unit === null ? "—" : String(c.kgce_per_unit)),
      el("td", { class: "num" }, fmt(c.kgce))));
    const energyTable = el("table", { class: "grid compact", id: "carriers" },
      el("thead", {}, el("tr", {}, el("th", {}, t("carrier")), el("th", { class: "num" }, t("consumption")), el("th", { class: "num" }, t("coefficient")), el("th", { class: "num" }, t("kgce")))),
      el("tbody", {}, carrierRows.length ? carrierRows : el("tr", {}, el("td", { colspan: 4, class: "muted" }, t("no_data")))));
    const intensity = ["energy_per_unit_kgce", "energy_per_value_added", "energy_per_value_added_change", "water_per_value_added", "co2_per_value_added"]
      .filter((k) => ind[k]).map((k) => el("div", { class: "kv", "data-indicator": k },
        el("span", {}, indName(ind[k], k)),
        el("b", {}, k.endsWith("_change") ? pct(ind[k].value) : fmt(ind[k].value, ind[k].unit), " ", el("small", {}, k.endsWith("_change") ? "" : ind[k].unit)),
        ind[k].target ? el("span", {}, " ", t("target"), " ", targetText(ind[k]), " ", lightEl(ind[k])) : null));

    // NC rate with its key-process equipment.
    const kp = ov.equipment.filter((q) => q.key_process);
    const nc = ind.key_process_nc_rate;
    const ncTable = el("table", { class: "grid compact", id: "key-process" },
      el("thead", {}, el("tr", {}, el("th", {}, t("equipment")), el("th", {}, t("key_process")), el("th", {}, t("control")), el("th", {}, t("nc")), el("th", {}, t("networked")))),
      el("tbody", {}, kp.map((q) => el("tr", {},
        el("td", {}, el("a", { href: "#/equipment/" + q.id }, name(q, q.id))),
        el("td", {}, q.key_process), el("td", {}, q.control),
        el("td", {}, fmt(["cnc", "plc", "dcs", "robot"].includes(q.control))),
        el("td", {}, fmt(q.networked))))));

    // Units below.
    const below = app.entities.filter((x) => x.parent === id);
    const belowList = el("ul", { class: "links" }, below.map((x) => el("li", {},
      el("a", { href: (x.kind === "equipment" ? "#/equipment/" : "#/entity/") + x.id }, name(x, x.id)),
      el("small", { class: "muted" }, " ", t(x.kind)))));

    const parts = [
      breadcrumbs(id),
      el("h1", {}, name(e, id), el("small", { class: "muted" }, " · ", t(kind), " · ", ov.indicators.from, " — ", ov.indicators.to)),
      card(t("oee_factors"), oeeTiles, el("div", { class: "row" }, lossBox, seriesBox)),
      card(t("state_timeline"), timelineBox),
      card(t("energy_by_carrier"), el("div", { class: "row" }, energyTable, energyBox), el("h3", {}, t("energy_vs_baseline")), intensity),
      card(`${t("nc_rate")}: ${nc ? fmt(nc.value, nc.unit) : "—"}`, nc && nc.target ? el("p", {}, t("target"), " ", targetText(nc), " ", lightEl(nc)) : null, ncTable),
    ];
    if (assess) parts.push(assessmentCard(assessKind, assess));
    if (below.length) parts.push(card(t("children"), belowList));
    parts.push(allIndicators(ind));
    m.replaceChildren(...parts);
    applyBars(m);

    // Loss breakdown (seconds per state over the equipment).
    const totals = ov.state_totals_s || {};
    chart(lossBox, {
      tooltip: { trigger: "item", valueFormatter: (v) => (v / 3600).toFixed(1) + " h" },
      legend: { bottom: 0 },
      series: [{ type: "pie", radius: ["35%", "65%"], data: STATES.filter((s) => totals[s] > 0).map((s) => ({ name: stateName(s), value: totals[s], itemStyle: { color: STATE_COLORS[s] } })) }],
    });
    chart(seriesBox, {
      tooltip: { trigger: "axis" },
      grid: { left: 50, right: 20, top: 30, bottom: 30 },
      xAxis: { type: "category", data: series.points.map((p) => p.from.slice(5, 10)) },
      yAxis: { type: "value", max: 1, axisLabel: { formatter: (v) => (v * 100).toFixed(0) + "%" } },
      series: [{ type: "line", name: "OEE", data: series.points.map((p) => p.value), itemStyle: { color: "#3d7bd9" } }],
    });
    chart(energyBox, {
      tooltip: { trigger: "item" },
      series: [{ type: "pie", radius: "65%", data: ov.carriers.filter((c) => c.kgce).map((c) => ({ name: app.lang === "en" ? c.name_en : c.name_zh, value: c.kgce })) }],
    });
    timelineChart(timelineBox, timeline);
  }

  function timelineChart(box, tl) {
    const rows = tl.equipment;
    const cats = rows.map((r) => name(r, r.id.split("/").pop()));
    const data = [];
    rows.forEach((r, i) => r.intervals.forEach(([f, to, s]) => data.push({ value: [i, f, to, s], itemStyle: { color: STATE_COLORS[s] || "#888" } })));
    box.style.height = Math.max(160, 40 + rows.length * 26) + "px";
    chart(box, {
      tooltip: { formatter: (p) => `${esc(cats[p.value[0]])}<br>${esc(stateName(p.value[3]))}<br>${when(p.value[1])} — ${when(p.value[2])}` },
      grid: { left: 120, right: 20, top: 10, bottom: 30 },
      xAxis: { type: "time", min: tl.from, max: tl.to },
      yAxis: { type: "category", data: cats, inverse: true },
      series: [{
        type: "custom",
        encode: { x: [1, 2], y: 0 },
        data,
        renderItem: (params, api2) => {
          const y = api2.value(0);
          const a = api2.coord([api2.value(1), y]);
          const b = api2.coord([api2.value(2), y]);
          const h = api2.size([0, 1])[1] * 0.6;
          const rect = window.echarts.graphic.clipRectByRect(
            { x: a[0], y: a[1] - h / 2, width: Math.max(1, b[0] - a[0]), height: h },
            { x: params.coordSys.x, y: params.coordSys.y, width: params.coordSys.width, height: params.coordSys.height });
          return rect && { type: "rect", shape: rect, style: api2.style() };
        },
      }],
    });
  }

  function assessmentCard(kind, a) {
    if (a.error) return card(t("assessment_" + kind), el("p", { class: "muted" }, a.error));
    const blocks = (a.results || []).map((r) => el("div", { class: "assessment", "data-result": r.result },
      el("h3", {}, r.rule_set, " · ", t("result"), ": ", el("span", { class: "light " + ({ pass: "green", fail: "red" }[r.result] || "grey") }, t(r.result))),
      el("table", { class: "grid compact" },
        el("thead", {}, el("tr", {}, el("th", {}, t("criterion")), el("th", { class: "num" }, t("value")), el("th", { class: "num" }, t("threshold")), el("th", {}, t("result")), el("th", {}, t("completeness")))),
        el("tbody", {}, r.criteria.map((c) => el("tr", {},
          el("td", {}, app.lang === "en" ? c.name_en : c.name_zh),
          el("td", { class: "num" }, fmt(c.value)),
          el("td", { class: "num" }, (c.comparison === "le" ? "≤ " : "≥ ") + fmt(c.threshold)),
          el("td", {}, el("span", { class: "light " + (c.pass === true ? "green" : c.pass === false ? "red" : "grey") }, c.pass === true ? t("pass") : c.pass === false ? t("fail") : t("incomplete"))),
          el("td", {}, completenessBar(c.completeness))))))));
    return card(t("assessment_" + kind), blocks.length ? blocks : el("p", { class: "muted" }, t("no_data")));
  }

  async function equipmentPage(id) {
    const gen = app.gen;
    const m = main();
    const e = entity(id);
    const live = await api("/api/v1/live?entity=" + encodeURIComponent(id));
    if (gen !== app.gen) return;
    const st = live.state;
    const stateBox = el("div", { class: "state-now", id: "state-now", "data-state": st ? st.state : "none" },
      el("span", { class: "swatch", "data-color": st ? STATE_COLORS[st.state] : "#888" }),
      el("b", {}, st ? stateName(st.state) : t("no_data")),
      st ? el("span", { class: "muted" }, " ", t("since"), " ", when(st.from), " — ", when(st.to)) : null);
    const counters = el("table", { class: "grid compact", id: "counters" },
      el("thead", {}, el("tr", {}, el("th", {}, t("role_col")), el("th", {}, t("point")), el("th", { class: "num" }, t("value")), el("th", { class: "num" }, t("change_1h")), el("th", {}, t("time")))),
      el("tbody", {}, live.counters.map((c) => el("tr", {}, el("td", {}, c.role), el("td", {}, c.point), el("td", { class: "num" }, fmt(c.value)), el("td", { class: "num" }, fmt(c.change_1h)), el("td", {}, when(c.t))))));
    const samples = el("table", { class: "grid compact", id: "samples" },
      el("thead", {}, el("tr", {}, el("th", {}, t("point")), el("th", { class: "num" }, t("value")), el("th", {}, t("time")))),
      el("tbody", {}, live.samples.map((s) => el("tr", {}, el("td", {}, s.point),
        el("td", { class: "num" }, s.error ? el("span", { class: "bad" }, s.error) : s.text !== null ? s.text : s.is_bool ? fmt(s.value !== 0) : fmt(s.value)),
        el("td", {}, when(s.t))))));
    const agents = el("table", { class: "grid compact", id: "agents" },
      el("thead", {}, el("tr", {}, el("th", {}, t("agent")), el("th", { class: "num" }, t("batches")), el("th", {}, t("last_received")), el("th", { class: "num" }, t("missing")))),
      el("tbody", {}, live.agents.map((a) => el("tr", {}, el("td", {}, a.id, a.revoked ? el("span", { class: "light red" }, t("revoked")) : null),
        el("td", { class: "num" }, fmt(a.batches)), el("td", {}, when(a.last_received)), el("td", { class: "num" }, fmt(a.missing))))));
    const fresh = live.link.last_data_minute && live.now - live.link.last_data_minute < 180000;
    m.replaceChildren(
      breadcrumbs(id),
      el("h1", {}, name(e, id), el("small", { class: "muted" }, " · ", t("equipment"), " · ", t("updated"), " ", when(live.now))),
      card(t("current_state"), stateBox),
      card(t("counters"), counters),
      card(t("latest_samples"), samples),
      card(t("link_health"),
        el("div", { class: "kv" }, el("span", {}, t("last_data")), el("b", { id: "last-data" }, when(live.link.last_data_minute)), " ", el("span", { class: "light " + (fresh ? "green" : "red") }, fresh ? "OK" : "!")),
        el("div", { class: "kv" }, el("span", {}, t("link_events")), el("b", {}, fmt(live.link.events_1h))),
        agents));
    m.querySelectorAll(".swatch[data-color]").forEach((s) => { s.style.background = s.dataset.color; });
  }

  function reportsPage() {
    const m = main();
    if (!can("evidence")) {
      m.replaceChildren(el("div", { class: "error", id: "forbidden", role: "alert" }, t("no_permission")));
      return;
    }
    const ents = app.entities.filter((e) => ["park", "enterprise", "workshop"].includes(e.kind));
    const sel = el("select", { id: "report-entity" }, ents.map((e) => el("option", { value: e.id, selected: e.kind === "enterprise" && !ents.slice(0, ents.indexOf(e)).some((x) => x.kind === "enterprise") }, `${name(e, e.id)} (${e.id})`)));
    const fmtSel = el("select", { id: "report-format" }, ["html", "xlsx", "csv", "json"].map((f) => el("option", { value: f }, f.toUpperCase())));
    const msg = el("p", { id: "report-msg", class: "muted" });
    const go = async () => {
      msg.textContent = t("loading");
      try {
        const blob = await api(`/api/v1/reports?${periodQuery(sel.value)}&format=${fmtSel.value}&lang=${app.lang}`);
        const a = el("a", { href: URL.createObjectURL(blob), download: `report-${sel.value.replaceAll("/", "_")}.${fmtSel.value}` });
        document.body.append(a);
        a.click();
        a.remove();
        msg.textContent = t("downloaded");
      } catch (err) {
        msg.textContent = `${t("error")}: ${err.message}`;
      }
    };
    m.replaceChildren(el("h1", {}, t("reports_title")), card(null,
      el("p", {}, t("reports_hint")),
      el("div", { class: "form" },
        el("label", {}, t("entity"), " ", sel),
        el("label", {}, t("format"), " ", fmtSel),
        el("span", { class: "muted" }, t("period_label"), ": ", iso(periodRange()[0]).slice(0, 10), " — ", iso(periodRange()[1]).slice(0, 10)),
        el("button", { id: "report-go", onclick: go }, t("download"))),
      msg));
  }

  async function inputsPage() {
    const gen = app.gen;
    const m = main();
    if (!can("inputs_write")) {
      m.replaceChildren(el("div", { class: "error", id: "forbidden", role: "alert" }, t("no_permission")));
      return;
    }
    const ents = app.entities.filter((e) => e.kind === "enterprise");
    const sel = el("select", { id: "inputs-entity" }, ents.map((e) => el("option", { value: e.id }, `${name(e, e.id)} (${e.id})`)));
    const fields = ["value_added_cny", "gross_output_cny", "employees_avg", "land_area_m2"];
    const inputs = Object.fromEntries(fields.map((f) => [f, el("input", { type: "number", step: "any", min: "0", id: "in-" + f })]));
    const msg = el("p", { id: "inputs-msg", class: "muted" });
    const hist = el("div", { id: "inputs-history" });
    const loadHistory = async () => {
      const h = await api("/api/v1/inputs?entity=" + encodeURIComponent(sel.value));
      if (gen !== app.gen) return;
      hist.replaceChildren(el("table", { class: "grid compact" },
        el("thead", {}, el("tr", {}, el("th", {}, t("period_label")), el("th", { class: "num" }, "v"), el("th", {}, t("recorded_by")), el("th", {}, t("recorded_at")), fields.map((f) => el("th", { class: "num" }, t(f))))),
        el("tbody", {}, h.records.map((r) => el("tr", {}, el("td", {}, `${r.from} — ${r.to}`), el("td", { class: "num" }, r.version), el("td", {}, r.actor), el("td", {}, r.at),
          fields.map((f) => el("td", { class: "num" }, fmt(r.doc[f]))))))));
    };
    const submit = async () => {
      const [f, to] = periodRange();
      const doc = { entity: sel.value, from: iso(f), to: iso(to) };
      for (const k of fields) if (inputs[k].value !== "") doc[k] = Number(inputs[k].value);
      msg.textContent = t("loading");
      try {
        await api("/api/v1/inputs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(doc) });
        msg.textContent = t("saved");
        await loadHistory();
      } catch (err) {
        msg.textContent = `${t("error")}: ${err.message}`;
      }
    };
    sel.addEventListener("change", () => loadHistory().catch(showError));
    m.replaceChildren(el("h1", {}, t("inputs_title")), card(null,
      el("p", {}, t("inputs_hint")),
      el("div", { class: "form" }, el("label", {}, t("entity"), " ", sel),
        el("span", { class: "muted" }, t("period_label"), ": ", iso(periodRange()[0]), " — ", iso(periodRange()[1]))),
      el("div", { class: "form" }, fields.map((f) => el("label", {}, t(f), " ", inputs[f]))),
      el("button", { id: "inputs-submit", onclick: submit }, t("submit")), msg),
    card(t("history"), hist));
    if (ents.length) await loadHistory();
  }

  function loginPage(message) {
    stopEvents();
    const name = el("input", { type: "text", id: "login-name", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true, "aria-label": t("user_name") });
    const pass = el("input", { type: "password", id: "login-password", autocomplete: "current-password", required: true, "aria-label": t("password") });
    const msg = el("p", { id: "login-msg", class: "error-text", role: "alert" }, message || "");
    const button = el("button", { type: "submit", id: "login-submit" }, t("login"));
    const submit = async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      msg.textContent = "";
      try {
        await signIn(name.value.trim(), pass.value);
        pass.value = "";
        if (location.hash === "" || location.hash === "#/login") location.hash = "#/";
        else route();
      } catch (err) {
        pass.value = "";
        if (err.status === 429) msg.textContent = t("login_wait")(err.retryAfter);
        else if (err.status === 401) msg.textContent = `${t("login_failed")}: ${t("login_bad")}`;
        else msg.textContent = `${t("login_failed")}: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    };
    header();
    main().replaceChildren(el("form", { class: "card login", id: "login", onsubmit: submit },
      el("h1", {}, t("login_title")),
      el("p", { class: "muted" }, t("login_hint")),
      el("label", {}, t("user_name"), name),
      el("label", {}, t("password"), pass),
      button,
      msg));
    name.focus();
  }

  // ----------------------------------------------------------------------------------------
  // Session, live updates, routing

  // POST /api/v1/login: the gateway sets the session cookie and answers the CSRF token.
  async function signIn(name, password) {
    const r = await fetch("/api/v1/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, password }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new ApiError(r.status, body.error || r.statusText);
      err.retryAfter = Number(r.headers.get("Retry-After")) || 60;
      throw err;
    }
    app.csrf = body.csrf;
    localStorage.setItem(SIGNED_IN, "1");
    await loadSession();
  }

  // The cookie's session (after sign-in, or after a reload: then the CSRF token comes from here).
  async function loadSession() {
    const r = await fetch("/api/v1/session", { credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new ApiError(r.status, body.error || r.statusText);
    app.session = body;
    if (body.clock) body.clock.fetched_at = Date.now();
    app.csrf = body.csrf || app.csrf;
    app.entities = (await api("/api/v1/entities")).entities;
    startEvents();
  }

  function forget() {
    stopEvents();
    app.session = null;
    app.csrf = null;
    localStorage.removeItem(SIGNED_IN);
  }

  // The sign-out button: the gateway ends the session and removes the cookie.
  async function signOut() {
    const csrf = app.csrf;
    forget();
    try {
      await fetch("/api/v1/logout", { method: "POST", credentials: "same-origin", headers: csrf ? { "X-CSRF-Token": csrf } : {} });
    } catch (err) {
      // Signed out here anyway; the session ends by itself.
    }
    if (location.hash === "#/login") loginPage();
    else location.hash = "#/login";
  }

  // A 401 while signed in: the session expired, was ended elsewhere, or the user changed.
  function sessionEnded() {
    const was = !!app.session;
    forget();
    loginPage(was ? t("session_expired") : "");
  }

  function stopEvents() {
    if (app.events) app.events.abort();
    app.events = null;
  }

  // Server-Sent Events read with fetch (reconnects on its own terms; ends with the session).
  async function startEvents() {
    stopEvents();
    const ctl = new AbortController();
    app.events = ctl;
    let pending = null;
    while (!ctl.signal.aborted && app.session) {
      try {
        const r = await fetch("/api/v1/events", { credentials: "same-origin", signal: ctl.signal });
        if (r.status === 401) {
          if (app.events === ctl) sessionEnded();
          return;
        }
        if (!r.ok || !r.body) throw new Error(r.statusText);
        setLive(true);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const msg = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (/^event: ingest$/m.test(msg) && app.refresh && !pending) {
              // At most one refresh per 5 s, however fast batches arrive.
              pending = setTimeout(() => {
                pending = null;
                if (app.refresh && !document.hidden) app.refresh(true);
              }, 5000);
            }
          }
        }
      } catch (err) {
        if (ctl.signal.aborted) return;
      }
      setLive(false);
      await new Promise((res) => setTimeout(res, 3000));
    }
  }

  function setLive(on) {
    app.liveOn = on;
    const d = document.getElementById("live");
    if (!d) return;
    d.classList.toggle("on", on);
    d.title = on ? t("live") : t("live_off");
  }

  async function route() {
    app.gen += 1;
    disposeCharts();
    app.refresh = null;
    const h = location.hash.replace(/^#\/?/, "");
    if (!app.session) {
      // Only ask for a session when this browser signed in (no needless 401 otherwise).
      if (!localStorage.getItem(SIGNED_IN)) return loginPage();
      try {
        await loadSession();
      } catch (err) {
        const expired = err.status === 401;
        forget();
        return loginPage(expired ? t("session_expired") : `${t("error")}: ${err.message}`);
      }
    }
    if (h === "login") {
      if (location.hash !== "#/") location.hash = "#/";
      return;
    }
    header();
    const [page, ...rest] = h.split("/");
    const id = rest.join("/");
    const run = async (fn) => {
      const go = async (quiet) => {
        try {
          if (quiet) {
            // Live refresh: keep the page, redraw it in place.
            const y = window.scrollY;
            await fn();
            window.scrollTo(0, y);
          } else {
            await fn();
          }
        } catch (err) {
          if (err.status !== 401) showError(err);
        }
      };
      app.refresh = go;
      await go(false);
    };
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
    switch (page) {
      case "park": return run(() => parkPage(id));
      case "entity": return run(() => entityPage(id));
      case "equipment": return run(() => equipmentPage(id));
      case "reports": return reportsPage();
      case "inputs": return inputsPage().catch(showError);
      default: {
        const park = app.entities.find((e) => e.kind === "park");
        const first = park || app.entities.find((e) => e.kind === "enterprise");
        if (!first) return main().replaceChildren(el("p", { class: "muted" }, t("no_data")));
        location.hash = (park ? "#/park/" : "#/entity/") + first.id;
      }
    }
  }

  window.addEventListener("hashchange", route);
  route();
})();
