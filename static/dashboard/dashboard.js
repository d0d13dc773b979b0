// GradePulse live dashboard: a hand-written graphql-transport-ws client to this
// origin's /graphql, figures coloured against the alert thresholds, and 5-minute
// charts (vendored Chart.js). No framework, nothing loaded from elsewhere.
(() => {
  "use strict";

  // ---- configuration (embedded by monitoring/dashboard.py) ----------------------
  const config = readConfig();
  const T = config.thresholds; // rule id -> threshold
  const WINDOW_MS = config.windowSeconds * 1000;
  const STALE_AFTER_MS = 5000;

  function readConfig() {
    const defaults = {
      environment: "",
      thresholds: {},
      graphqlPath: "/graphql",
      windowSeconds: 300,
      intervalMs: 1000,
      authRequired: false,
    };
    try {
      const text = document.getElementById("dashboard-config").textContent;
      return { ...defaults, ...JSON.parse(text) };
    } catch (error) {
      return defaults; // the raw template, opened from /static: still a working page
    }
  }

  const violations = [];
  document.addEventListener("securitypolicyviolation", (event) => {
    violations.push(`${event.violatedDirective} ${event.blockedURI}`);
  });

  // ---- GraphQL documents -------------------------------------------------------
  const METRICS_FIELDS = `
    fragment DashboardMetrics on MetricsSnapshot {
      at environment requestsTotal requestsPerMinute errorRate
      responseTimeMs { avg p95 p99 }
      cacheHitRate cacheHits cacheMisses dbQueriesTotal dbQueriesPerMinute
      memoryMb cpuPercent activeSubscriptions totalCost currentPeriodCost
      workers degraded
    }`;
  const COSTS_FIELDS = `
    fragment DashboardCosts on CostSnapshot {
      totalCost dbCost apiCost dbQueries apiRequests costPerHour costWindowFull
      currentPeriod { timestamp totalCost dbQueries apiRequests }
    }`;
  const ALERT_FIELDS = `
    fragment DashboardAlert on AlertEvent { rule state message threshold at }`;

  const METRICS_SUBSCRIPTION = `subscription DashboardMetricsFeed($intervalMs: Int!) {
      metrics(intervalMs: $intervalMs) { ...DashboardMetrics } } ${METRICS_FIELDS}`;
  const COSTS_SUBSCRIPTION = `subscription DashboardCostsFeed($intervalMs: Int!) {
      costs(intervalMs: $intervalMs) { ...DashboardCosts } } ${COSTS_FIELDS}`;
  const ALERTS_SUBSCRIPTION = `subscription DashboardAlertsFeed {
      alerts { ...DashboardAlert } } ${ALERT_FIELDS}`;
  // One HTTP operation at start and after each reconnection: the recent alerts
  // (and what was missed while away) and figures to show before the first tick.
  const INITIAL_QUERY = `query DashboardInitial {
      alerts(last: 20) { ...DashboardAlert }
      metrics { ...DashboardMetrics }
      costs { ...DashboardCosts } } ${ALERT_FIELDS} ${METRICS_FIELDS} ${COSTS_FIELDS}`;

  // ---- graphql-transport-ws ------------------------------------------------------
  // https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md, as Strawberry
  // speaks it: connection_init -> connection_ack, then subscribe / next / error /
  // complete per operation id; ping and pong both ways.
  const PROTOCOL = "graphql-transport-ws";
  const ACK_TIMEOUT_MS = 5000;
  const KEEPALIVE_MS = 10000; // our ping; a silent socket for 3x this is dead
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const RESUBSCRIBE_MS = 10000; // after an operation's error or completion

  const utf8 = new TextDecoder();

  // Refused credentials: graphql-transport-ws closes with 4403 (do not retry with
  // the same key; ask for another).
  const CREDENTIALS_REFUSED = 4403;

  class TransportWsClient {
    constructor(url, { onState, onAck, connectionParams, onRefused }) {
      this.url = url;
      this.onState = onState;
      this.onAck = onAck;
      this.connectionParams = connectionParams;
      this.onRefused = onRefused;
      this.ws = null;
      this.acked = false;
      this.nextId = 1;
      this.operations = new Map(); // key -> {key, payload, handlers, id, retry}
      this.byId = new Map(); // operation id -> operation on the current socket
      this.attempt = 0;
      this.retryTimer = null;
      this.ackTimer = null;
      this.keepAliveTimer = null;
      this.lastMessageAt = 0;
      this.state = "idle";
    }

    // Subscriptions live as long as the page: resubscribed after every reconnection.
    subscribe(key, payload, handlers) {
      const operation = { key, payload, handlers, id: null, retry: null };
      this.operations.set(key, operation);
      if (this.acked) this.start(operation);
    }

    connect() {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.setState("connecting", {});
      let ws;
      try {
        ws = new WebSocket(this.url, PROTOCOL);
      } catch (error) {
        this.scheduleReconnect({ code: 0, reason: String(error) });
        return;
      }
      this.ws = ws;
      // The server may send its JSON as binary frames (bytes from orjson).
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        this.lastMessageAt = Date.now();
        this.send(ws, { type: "connection_init", payload: this.connectionParams() });
        this.ackTimer = setTimeout(
          () => this.drop(ws, 4408, "no connection_ack"),
          ACK_TIMEOUT_MS,
        );
      };
      ws.onmessage = (event) => this.receive(ws, event.data);
      ws.onclose = (event) => this.closed(ws, event.code, event.reason);
      ws.onerror = () => {}; // a close event follows
    }

    reconnectNow() {
      if (this.ws === null) this.connect();
    }

    close() {
      if (this.ws) this.drop(this.ws, 1000, "page closed", false);
    }

    send(ws, message) {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
    }

    start(operation) {
      clearTimeout(operation.retry);
      operation.retry = null;
      const id = String(this.nextId++);
      operation.id = id;
      this.byId.set(id, operation);
      this.send(this.ws, { id, type: "subscribe", payload: operation.payload });
    }

    retryLater(operation) {
      operation.id = null;
      clearTimeout(operation.retry);
      operation.retry = setTimeout(() => {
        operation.retry = null;
        if (this.acked && operation.id === null) this.start(operation);
      }, RESUBSCRIBE_MS);
    }

    receive(ws, raw) {
      if (ws !== this.ws) return;
      this.lastMessageAt = Date.now();
      let message;
      try {
        const text = typeof raw === "string" ? raw : utf8.decode(raw);
        message = JSON.parse(text);
      } catch (error) {
        this.drop(ws, 4400, "invalid message");
        return;
      }
      const operation = message.id === undefined ? null : this.byId.get(message.id);
      switch (message.type) {
        case "connection_ack":
          clearTimeout(this.ackTimer);
          this.acked = true;
          this.attempt = 0;
          this.setState("live", {});
          this.keepAlive(ws);
          for (const op of this.operations.values()) this.start(op);
          if (this.onAck) this.onAck();
          break;
        case "ping":
          this.send(ws, { type: "pong" });
          break;
        case "pong":
          break;
        case "next":
          if (operation) operation.handlers.next(message.payload || {});
          break;
        case "error":
          if (operation) {
            this.byId.delete(message.id);
            operation.handlers.error(message.payload || []);
            this.retryLater(operation);
          }
          break;
        case "complete":
          if (operation) {
            this.byId.delete(message.id);
            this.retryLater(operation);
          }
          break;
        default:
          break;
      }
    }

    keepAlive(ws) {
      clearInterval(this.keepAliveTimer);
      this.keepAliveTimer = setInterval(() => {
        if (Date.now() - this.lastMessageAt > 3 * KEEPALIVE_MS) {
          this.drop(ws, 4000, "no traffic"); // a half-open connection
        } else {
          this.send(ws, { type: "ping" });
        }
      }, KEEPALIVE_MS);
    }

    // Give up on this socket now, without waiting for a close handshake.
    drop(ws, code, reason, reconnect = true) {
      try {
        ws.close(code === 1000 || code >= 4000 ? code : 4000, reason);
      } catch (error) {
        // already closing
      }
      this.closed(ws, code, reason, reconnect);
    }

    closed(ws, code, reason, reconnect = true) {
      if (ws !== this.ws) return;
      this.ws = null;
      this.acked = false;
      clearTimeout(this.ackTimer);
      clearInterval(this.keepAliveTimer);
      this.byId.clear();
      for (const op of this.operations.values()) {
        clearTimeout(op.retry);
        op.retry = null;
        op.id = null;
      }
      if (code === CREDENTIALS_REFUSED) {
        this.setState("refused", { code, reason });
        this.onRefused(reason);
      } else if (reconnect) {
        this.scheduleReconnect({ code, reason });
      }
    }

    scheduleReconnect(info) {
      this.attempt += 1;
      const ceiling = Math.min(
        BACKOFF_MAX_MS,
        BACKOFF_BASE_MS * 2 ** (this.attempt - 1),
      );
      const delay = Math.round(ceiling * (0.75 + Math.random() * 0.5));
      this.setState("reconnecting", { ...info, delay, at: Date.now() + delay });
      this.retryTimer = setTimeout(() => this.connect(), delay);
    }

    setState(state, info) {
      this.state = state;
      this.onState(state, info);
    }
  }

  // ---- formatting and levels ---------------------------------------------------
  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const DASH = "—";

  function fmtInt(value) {
    return value == null ? DASH : integer.format(value);
  }

  function fmtMs(value) {
    if (value == null) return DASH;
    if (value < 10) return value.toFixed(2);
    if (value < 100) return value.toFixed(1);
    return integer.format(Math.round(value));
  }

  function fmtPct(value) {
    return value == null ? DASH : value.toFixed(1);
  }

  function fmtMoney(value) {
    return value == null ? DASH : `$${value.toFixed(6)}`;
  }

  // Thresholds print as they were given: 300, 7.5, 0.05.
  function fmtThreshold(value) {
    return String(value);
  }

  function fmtClock(iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return "";
    const time = date.toLocaleTimeString("en-GB", { hour12: false });
    const today = new Date().toDateString() === date.toDateString();
    return today ? time : `${date.toLocaleDateString("en-CA")} ${time}`;
  }

  // Red beyond the threshold, yellow within 20% of it, green otherwise; "none"
  // without a value or without a rule.
  function level(value, threshold, direction) {
    if (value == null || threshold == null) return "none";
    if (direction === "above") {
      if (value > threshold) return "red";
      return value >= threshold * 0.8 ? "yellow" : "green";
    }
    if (value < threshold) return "red";
    return value <= threshold * 1.2 ? "yellow" : "green";
  }

  function ruleNote(rule, direction, unit, prefix = "") {
    const threshold = T[rule];
    if (threshold == null) return "no alert rule";
    const sign = direction === "above" ? ">" : "<";
    return `alert ${sign} ${prefix}${fmtThreshold(threshold)}${unit}`;
  }

  // ---- the page ----------------------------------------------------------------
  const $ = (selector) => document.querySelector(selector);
  const dom = {
    status: $("#status"),
    statusText: $("#status .status-text"),
    updated: $("#updated"),
    firing: $("#firing"),
    problem: $("#problem"),
    alertList: $("#alert-list"),
    alertsEmpty: $("#alerts-empty"),
    env: $('[data-metric="environment"]'),
    workers: $("#workers"),
  };

  function setFigure(name, text, lvl, sub) {
    const value = document.querySelector(`[data-metric="${name}"]`);
    const card = document.querySelector(`[data-card="${name}"]`);
    value.textContent = text;
    card.dataset.level = lvl;
    value.dataset.level = lvl;
    if (sub !== undefined) {
      document.querySelector(`[data-sub="${name}"]`).textContent = sub;
    }
  }

  // Cluster figures are merged from every live worker; a degraded worker (Redis
  // unreachable) shows its own alone.
  function setWorkers(workers, degraded) {
    if (workers == null) return;
    dom.workers.dataset.degraded = String(Boolean(degraded));
    dom.workers.textContent = degraded
      ? "this worker only (cluster unreachable)"
      : `${workers} worker${workers === 1 ? "" : "s"}`;
    dom.workers.title = degraded
      ? "Degraded: this worker cannot hear the others; the figures are its own"
      : "Workers whose figures are merged into these";
  }

  function setEnvironment(name) {
    if (!name) return;
    dom.env.textContent = name;
    dom.env.dataset.env = name;
  }

  const state = {
    updates: 0,
    lastUpdateAt: 0,
    costFromFeed: false,
    // The server's costPerHour and costWindowFull (the high_cost rule's own figure)
    // from the latest costs snapshot; null before the first one.
    costRate: null,
    alerts: new Map(), // key -> event
    firing: new Set(), // rule ids whose latest event is a firing
    problems: new Map(), // source -> message
  };

  const series = {
    avg: [],
    p95: [],
    requests: [],
    memory: [],
    cost: [],
  };

  function push(points, t, y, keep = WINDOW_MS) {
    points.push({ t, y });
    while (points.length && points[0].t < t - keep) points.shift();
  }

  function applyMetrics(m) {
    const now = Date.now();
    state.updates += 1;
    state.lastUpdateAt = now;
    document.body.dataset.updates = String(state.updates);
    setEnvironment(m.environment);
    setWorkers(m.workers, m.degraded);
    const times = m.responseTimeMs || {};
    setFigure(
      "requestsPerMinute",
      fmtInt(m.requestsPerMinute),
      "none",
      `${fmtInt(m.requestsTotal)} since start`,
    );
    setFigure(
      "responseAvg",
      fmtMs(times.avg),
      level(times.avg, T.high_response_time, "above"),
      ruleNote("high_response_time", "above", " ms"),
    );
    setFigure(
      "responseP95",
      fmtMs(times.p95),
      level(times.p95, T.high_response_time, "above"),
      `p99 ${fmtMs(times.p99)} ms · ${ruleNote("high_response_time", "above", " ms")}`,
    );
    setFigure(
      "errorRate",
      fmtPct(m.errorRate),
      level(m.errorRate, T.high_error_rate, "above"),
      `${ruleNote("high_error_rate", "above", "%")} · last 60 s`,
    );
    setFigure(
      "cacheHitRate",
      fmtPct(m.cacheHitRate),
      level(m.cacheHitRate, T.low_cache_hit_rate, "below"),
      `${ruleNote("low_cache_hit_rate", "below", "%")} · last 60 s`,
    );
    setFigure(
      "memoryMb",
      m.memoryMb == null ? DASH : m.memoryMb.toFixed(1),
      level(m.memoryMb, T.high_memory, "above"),
      `${ruleNote("high_memory", "above", " MB")} · CPU ${m.cpuPercent == null ? DASH : m.cpuPercent.toFixed(0)}%`,
    );
    setFigure(
      "dbQueriesPerMinute",
      fmtInt(m.dbQueriesPerMinute),
      "none",
      `${fmtInt(m.dbQueriesTotal)} since start`,
    );
    setFigure("activeSubscriptions", fmtInt(m.activeSubscriptions), "none");

    push(series.avg, now, times.avg ?? null);
    push(series.p95, now, times.p95 ?? null);
    push(series.requests, now, m.requestsPerMinute);
    push(series.memory, now, m.memoryMb);
    if (!state.costFromFeed) {
      addCostPoint(now, m.totalCost);
      showCosts(m.totalCost, m.currentPeriodCost, null);
    }
    refreshUpdated();
    scheduleRender();
  }

  function applyCosts(c, fromFeed) {
    if (fromFeed) state.costFromFeed = true;
    const period = c.currentPeriod || {};
    if (fromFeed) addCostPoint(Date.now(), c.totalCost);
    if (c.costPerHour != null) {
      state.costRate = { perHour: c.costPerHour, full: Boolean(c.costWindowFull) };
    }
    showCosts(c.totalCost, period.totalCost, c, period);
    scheduleRender();
  }

  function addCostPoint(t, total) {
    if (total == null) return;
    push(series.cost, t, total);
  }

  // Dollars per hour as the server's high_cost rule sees them (costPerHour), so
  // that the card and the alert agree: coloured against the threshold once the
  // rule judges it (a full window); before, shown as what was spent so far.
  function costRateText(rate) {
    if (rate == null) return "$/h: waiting for the server";
    if (!rate.full) return `${fmtMoney(rate.perHour)}/h so far (window filling)`;
    return `${fmtMoney(rate.perHour)}/h`;
  }

  function showCosts(total, periodTotal, snapshot, period) {
    const rate = state.costRate;
    let lvl = "none";
    if (state.firing.has("high_cost")) {
      lvl = "red";
    } else if (rate != null && rate.full) {
      lvl = level(rate.perHour, T.high_cost, "above");
    }
    const rateText = costRateText(rate);
    setFigure(
      "totalCost",
      fmtMoney(total),
      lvl,
      `${rateText} · ${ruleNote("high_cost", "above", "/h", "$")}`,
    );
    let periodSub = "the open period";
    const periodCard = document.querySelector('[data-card="periodCost"]');
    if (period && period.timestamp) {
      periodSub = `since ${fmtClock(period.timestamp)} · ${fmtInt(period.apiRequests)} requests`;
      periodCard.title =
        `Period from ${period.timestamp}: ${fmtInt(period.apiRequests)} requests, ` +
        `${fmtInt(period.dbQueries)} DB queries`;
    }
    setFigure("periodCost", fmtMoney(periodTotal), lvl, periodSub);
    if (snapshot) {
      document.querySelector('[data-card="totalCost"]').title =
        `DB ${fmtMoney(snapshot.dbCost)} (${fmtInt(snapshot.dbQueries)} queries) · ` +
        `API ${fmtMoney(snapshot.apiCost)} (${fmtInt(snapshot.apiRequests)} requests)`;
    }
  }

  // ---- alerts --------------------------------------------------------------------
  const MAX_ALERTS = 50;

  const alertKey = (e) => `${e.at}|${e.rule}|${e.state}`;
  // What the server knows now: its answer to alerts(last: 20) and the events
  // streamed since. Only these say which rules are firing: a restarted server has
  // forgotten its alerts and will never send the resolution of an old one.
  let current = new Set();
  let streamedDuringFetch = null; // a Set while an alerts query is in flight

  function addAlerts(events, fetched = false) {
    const keys = [];
    for (const event of events) {
      if (!event) continue;
      const key = alertKey(event);
      state.alerts.set(key, event);
      keys.push(key);
    }
    if (fetched) {
      current = new Set([...keys, ...(streamedDuringFetch || [])]);
      streamedDuringFetch = null;
    } else {
      for (const key of keys) {
        current.add(key);
        if (streamedDuringFetch) streamedDuringFetch.add(key);
      }
    }
    const ordered = [...state.alerts.values()].sort((a, b) =>
      a.at < b.at ? 1 : a.at > b.at ? -1 : 0,
    );
    for (const stale of ordered.slice(MAX_ALERTS)) {
      state.alerts.delete(alertKey(stale));
      current.delete(alertKey(stale));
    }
    renderAlerts(ordered.slice(0, MAX_ALERTS));
  }

  function renderAlerts(ordered) {
    const items = ordered.map((event) => {
      const li = document.createElement("li");
      li.className = "alert";
      li.dataset.state = event.state;
      li.dataset.rule = event.rule;
      if (!current.has(alertKey(event))) li.classList.add("alert-past");
      const head = document.createElement("div");
      head.className = "alert-head";
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = event.state;
      const rule = document.createElement("span");
      rule.textContent = event.rule;
      const time = document.createElement("time");
      time.className = "alert-time";
      time.dateTime = event.at;
      time.textContent = fmtClock(event.at);
      head.append(badge, rule, time);
      const message = document.createElement("p");
      message.className = "alert-message";
      message.textContent = event.message;
      li.append(head, message);
      return li;
    });
    dom.alertList.replaceChildren(...items);
    dom.alertsEmpty.hidden = items.length > 0;
    // A rule is firing when its latest event (that the server knows) is a firing.
    const latest = new Map();
    for (const event of [...ordered].reverse()) {
      if (current.has(alertKey(event))) latest.set(event.rule, event.state);
    }
    state.firing = new Set(
      [...latest].filter(([, s]) => s === "FIRING").map(([rule]) => rule),
    );
    const firing = state.firing.size;
    dom.firing.hidden = firing === 0;
    dom.firing.dataset.count = String(firing);
    dom.firing.textContent = `${firing} alert${firing === 1 ? "" : "s"} firing`;
  }

  // ---- problems (subscription errors, failed fetches) ------------------------------
  function errorText(errors) {
    const list = Array.isArray(errors) ? errors : [errors];
    return list.map((e) => (e && e.message) || String(e)).join("; ");
  }

  function setProblem(source, text) {
    state.problems.set(source, `${source}: ${text}`);
    showProblems();
  }

  function clearProblem(source) {
    if (state.problems.delete(source)) showProblems();
  }

  function showProblems() {
    const text = [...state.problems.values()].join(" · ");
    dom.problem.hidden = text === "";
    dom.problem.textContent = text;
  }

  // ---- connection status -------------------------------------------------------
  let countdownTimer = null;
  const CLOSE_REASONS = {
    1006: "connection lost",
    1012: "server restarting",
    1013: "fell behind",
    4400: "bad message",
    4401: "unauthorized",
    4403: "forbidden",
    4408: "init timeout",
    4403: "credentials refused",
    4409: "duplicate id",
    4429: "too many requests",
  };

  function onConnectionState(next, info) {
    clearInterval(countdownTimer);
    dom.status.dataset.state = next;
    if (next === "live") {
      dom.statusText.textContent = "Live";
      dom.status.title = `Connected to ${wsUrl}`;
      return;
    }
    if (next === "connecting") {
      dom.statusText.textContent = "Connecting…";
      return;
    }
    if (next === "refused") {
      markGap();
      dom.statusText.textContent = "Needs an API key";
      dom.status.title = "The server refused the credentials";
      return;
    }
    // reconnecting: mark the gap in every chart, count down to the next attempt
    markGap();
    const why = CLOSE_REASONS[info.code] || (info.code ? `closed ${info.code}` : "");
    dom.status.title = `Disconnected${why ? ` (${why})` : ""}; click to retry now`;
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((info.at - Date.now()) / 1000));
      dom.statusText.textContent = `Reconnecting in ${seconds} s`;
    };
    tick();
    countdownTimer = setInterval(tick, 250);
  }

  function markGap() {
    const now = Date.now();
    for (const points of Object.values(series)) {
      const last = points[points.length - 1];
      if (last && last.y !== null) push(points, now, null);
    }
    scheduleRender();
  }

  function refreshUpdated() {
    if (!state.lastUpdateAt) return;
    const age = Date.now() - state.lastUpdateAt;
    dom.updated.textContent =
      age < 1500 ? "updated just now" : `updated ${Math.round(age / 1000)} s ago`;
    dom.updated.classList.toggle("stale", age > STALE_AFTER_MS);
  }

  // ---- charts ------------------------------------------------------------------
  const COLORS = {
    blue: "#58a6ff",
    purple: "#d2a8ff",
    green: "#3fb950",
    amber: "#e3b341",
    teal: "#39c5cf",
    red: "rgba(248, 81, 73, 0.75)",
    grid: "rgba(139, 150, 165, 0.12)",
    text: "#8b96a5",
  };
  const charts = [];

  function line(label, color, fill) {
    return {
      label,
      data: [],
      borderColor: color,
      backgroundColor: fill ? `${color}22` : color,
      fill: fill ? "origin" : false,
      borderWidth: 2,
      tension: 0.25,
      pointRadius: 0,
      pointHoverRadius: 3,
      spanGaps: false,
    };
  }

  function thresholdLine(value) {
    return {
      label: "threshold",
      data: [],
      borderColor: COLORS.red,
      borderDash: [6, 4],
      borderWidth: 1.5,
      pointRadius: 0,
      pointHoverRadius: 0,
      fill: false,
      value,
    };
  }

  function makeChart(canvasId, datasets, format, threshold, precision) {
    const canvas = document.getElementById(canvasId);
    const all = threshold == null ? datasets : [...datasets, thresholdLine(threshold)];
    const chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: all },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: false,
        normalized: true,
        interaction: { mode: "nearest", axis: "x", intersect: false },
        plugins: {
          legend: { display: false },
          tooltip: {
            filter: (item) => item.dataset.label !== "threshold",
            callbacks: {
              title: (items) =>
                items.length ? `${Math.round(-items[0].parsed.x)} s ago` : "",
              label: (item) => `${item.dataset.label}: ${format(item.parsed.y)}`,
            },
          },
        },
        scales: {
          x: {
            type: "linear",
            min: -WINDOW_MS / 1000,
            max: 0,
            ticks: {
              stepSize: 60,
              color: COLORS.text,
              callback: (v) => (v === 0 ? "now" : `${Math.round(v / 60)}m`),
            },
            grid: { color: COLORS.grid },
            border: { display: false },
          },
          y: {
            beginAtZero: true,
            grace: "10%",
            ticks: { color: COLORS.text, maxTicksLimit: 5, callback: format, precision },
            grid: { color: COLORS.grid },
            border: { display: false },
          },
        },
      },
    });
    return chart;
  }

  function setupCharts() {
    if (!window.Chart) {
      setProblem("charts", "chart.umd.min.js did not load");
      return;
    }
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    window.Chart.defaults.font.size = 11;
    const ms = (v) => (v == null ? DASH : `${Number(Number(v).toFixed(2))}`);
    const count = (v) => (v == null ? DASH : integer.format(v));
    const mb = (v) => (v == null ? DASH : `${Number(v).toFixed(0)}`);
    const dollars = (v) => (v == null ? DASH : `$${Number(Number(v).toFixed(6))}`);
    charts.push({
      chart: makeChart(
        "chart-response",
        [line("avg", COLORS.blue), line("p95", COLORS.purple)],
        ms,
        T.high_response_time,
      ),
      sources: [series.avg, series.p95],
    });
    charts.push({
      chart: makeChart(
        "chart-requests",
        [line("requests/min", COLORS.green, true)],
        count,
        null,
        0,
      ),
      sources: [series.requests],
    });
    charts.push({
      chart: makeChart(
        "chart-memory",
        [line("memory MB", COLORS.amber, true)],
        mb,
        T.high_memory,
      ),
      sources: [series.memory],
    });
    charts.push({
      chart: makeChart("chart-cost", [line("running cost", COLORS.teal, true)], dollars),
      sources: [series.cost],
    });
  }

  let renderPending = false;

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(render);
  }

  function render() {
    renderPending = false;
    const now = Date.now();
    for (const { chart, sources } of charts) {
      let highest = 0;
      sources.forEach((points, i) => {
        const data = [];
        for (const p of points) {
          if (p.t < now - WINDOW_MS) continue;
          data.push({ x: (p.t - now) / 1000, y: p.y });
          if (p.y != null && p.y > highest) highest = p.y;
        }
        chart.data.datasets[i].data = data;
      });
      const threshold = chart.data.datasets[sources.length];
      if (threshold) {
        // Drawn once the data comes within half of it: otherwise it would flatten
        // the lines it is there to judge.
        const x0 = -WINDOW_MS / 1000;
        threshold.data = [
          { x: x0, y: threshold.value },
          { x: 0, y: threshold.value },
        ];
        threshold.hidden = highest < threshold.value * 0.5;
      }
      chart.update("none");
    }
  }

  // ---- start ---------------------------------------------------------------------
  const graphqlUrl = new URL(config.graphqlPath, window.location.href);
  const wsUrl = `${window.location.protocol === "https:" ? "wss:" : "ws:"}//${graphqlUrl.host}${graphqlUrl.pathname}`;

  // The server reads the page's documents above and gives it each one's sha256
  // (config.documents): the page names them by hash, as trusted documents, which
  // run however PERSISTED_OPERATIONS is set. The text goes along, so that a worker
  // of another version (during a rolling deploy) runs them too.
  function operation(name, text, variables) {
    const hash = (config.documents || {})[name];
    const body = { query: text };
    if (hash) body.extensions = { persistedQuery: { version: 1, sha256Hash: hash } };
    body.operationName = name;
    if (variables) body.variables = variables;
    return body;
  }

  async function fetchInitial() {
    streamedDuringFetch = new Set();
    try {
      const response = await fetch(graphqlUrl.href, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "content-type": "application/json",
          accept: "application/json",
          ...authHeader(),
        },
        body: JSON.stringify(operation("DashboardInitial", INITIAL_QUERY)),
      });
      if (response.status === 401) {
        askForKey("The server refused the credentials for the initial query.");
        return;
      }
      const body = await response.json();
      if (body.errors) setProblem("initial query", errorText(body.errors));
      else clearProblem("initial query");
      const data = body.data || {};
      if (Array.isArray(data.alerts)) addAlerts(data.alerts, true);
      // Only before the feeds have spoken: a late answer must not undo them.
      if (data.metrics && state.updates === 0) applyMetrics(data.metrics);
      if (data.costs && !state.costFromFeed) applyCosts(data.costs, false);
    } catch (error) {
      setProblem("initial query", String(error));
    } finally {
      streamedDuringFetch = null;
    }
  }

  function feed(source, apply) {
    return {
      next(payload) {
        if (payload.errors) setProblem(source, errorText(payload.errors));
        const data = payload.data && payload.data[source];
        if (data) {
          if (!payload.errors) clearProblem(source);
          apply(data);
        }
      },
      error(errors) {
        setProblem(source, errorText(errors));
      },
    };
  }

  // ---- credentials -----------------------------------------------------------------
  const KEY_STORAGE = "gradepulse.apiKey";
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const keyNote = document.getElementById("key-note");
  let apiKey = readKey();

  function readKey() {
    try {
      return window.sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (error) {
      return ""; // storage switched off: the key lives as long as the page
    }
  }

  function authHeader() {
    return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  }

  function askForKey(note) {
    keyNote.textContent = note;
    keyForm.hidden = false;
    keyInput.focus();
  }

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey = keyInput.value.trim();
    keyInput.value = "";
    try {
      window.sessionStorage.setItem(KEY_STORAGE, apiKey);
    } catch (error) {
      // kept in memory only
    }
    keyForm.hidden = true;
    client.reconnectNow();
  });

  const client = new TransportWsClient(wsUrl, {
    onState: onConnectionState,
    onAck: fetchInitial, // also fills in the alerts missed while disconnected
    connectionParams: () => authHeader(),
    onRefused: (reason) =>
      askForKey(
        apiKey
          ? `The server refused this key${reason ? ` (${reason})` : ""}; enter another.`
          : "This server needs an API key.",
      ),
  });
  const interval = { intervalMs: config.intervalMs };
  client.subscribe(
    "metrics",
    operation("DashboardMetricsFeed", METRICS_SUBSCRIPTION, interval),
    feed("metrics", applyMetrics),
  );
  client.subscribe(
    "costs",
    operation("DashboardCostsFeed", COSTS_SUBSCRIPTION, interval),
    feed("costs", (c) => applyCosts(c, true)),
  );
  client.subscribe(
    "alerts",
    operation("DashboardAlertsFeed", ALERTS_SUBSCRIPTION),
    feed("alerts", (event) => addAlerts([event])),
  );

  setEnvironment(config.environment);
  for (const [name, rule, direction, unit] of [
    ["responseAvg", "high_response_time", "above", " ms"],
    ["errorRate", "high_error_rate", "above", "%"],
    ["cacheHitRate", "low_cache_hit_rate", "below", "%"],
    ["memoryMb", "high_memory", "above", " MB"],
  ]) {
    document.querySelector(`[data-sub="${name}"]`).textContent = ruleNote(
      rule,
      direction,
      unit,
    );
  }
  setupCharts();
  if (config.authRequired && !apiKey) {
    client.setState("refused", {});
    askForKey("This server needs an API key.");
  } else {
    client.connect();
  }
  setInterval(() => {
    refreshUpdated();
    scheduleRender(); // the time axis slides even when nothing arrives
  }, 1000);
  dom.status.addEventListener("click", () => client.reconnectNow());
  window.addEventListener("online", () => client.reconnectNow());
  window.addEventListener("pagehide", () => client.close());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) client.reconnectNow(); // back from the page cache
  });

  // For tests and curious operators (read-only use).
  window.gradePulseDashboard = { client, state, series, violations, wsUrl, level };
})();
