/* FleetStream legacy dashboard: uses only the public API (REST + /ws).
 * Event data is rendered with textContent only, never parsed as HTML. */
(function () {
  "use strict";

  const TRAIL_MAX = 200;        // points of the followed vehicle's trail
  const CHART_MAX = 120;        // points in the speed/RPM chart
  const HEAT_MAX = 4000;        // heatmap points kept
  const VIOLATION_ROWS = 50;
  const ALERT_ROWS = 8;         // alerts in the strip (newest first)
  const RENDER_MS = 250;
  const POLL_MS = 2000;
  const TOKEN_KEY = "fleetstream.apiToken";

  const $ = (id) => document.getElementById(id);
  const setText = (id, v) => { $(id).textContent = v; };

  // ----------------------------------------------------------------- token (optional)
  (function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const t = url.searchParams.get("token");
    if (t) {
      localStorage.setItem(TOKEN_KEY, t);
      url.searchParams.delete("token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  })();
  const tokenInput = $("token");
  tokenInput.value = localStorage.getItem(TOKEN_KEY) || "";
  if (tokenInput.value) $("token-box").hidden = false;
  tokenInput.addEventListener("change", () => {
    localStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  });

  function authHeaders() {
    const t = (tokenInput.value || "").trim();
    return t ? { "X-API-Token": t } : {};
  }

  // ----------------------------------------------------------------- messages
  let messageTimer = null;
  function say(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.dataset.kind = kind || "info";
    el.hidden = false;
    clearTimeout(messageTimer);
    messageTimer = setTimeout(() => { el.hidden = true; }, 6000);
  }

  // ----------------------------------------------------------------- data problems
  // The status line (#data-status) names each source whose last answer was unusable (no
  // answer in time, not JSON, an unexpected shape, malformed items skipped) until it
  // answers well again. Nothing the API sends may stop the page.
  const problems = new Map();      // source -> what was wrong
  const skippedBy = new Map();     // source -> malformed items skipped so far
  function problem(source, text) {
    const now = text ? String(text).slice(0, 160) : "";
    if ((problems.get(source) || "") === now) return;
    if (now) problems.set(source, now); else problems.delete(source);
    const el = $("data-status");
    const line = Array.from(problems, ([s, t]) => `${s}: ${t}`).join("; ");
    el.textContent = line ? "data: " + line : "";
    el.title = line;
    el.hidden = !line;
  }
  function skipped(source, n) {
    if (!n) return;
    const total = (skippedBy.get(source) || 0) + n;
    skippedBy.set(source, total);
    problem(source + " (items)", `${total} malformed item${total === 1 ? "" : "s"} skipped`);
  }
  const errText = (err) => String((err && err.message) || err);
  // One piece of work that may fail on its own: the failure is shown, never thrown on.
  function guard(what, fn) {
    try {
      fn();
      problem(what, "");
    } catch (err) {
      problem(what, "failed: " + errText(err));
      console.warn("dashboard:", what, err);
    }
  }

  // ----------------------------------------------------------------- shapes
  const isObj = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const isLatLon = (lat, lon) => isNum(lat) && isNum(lon) && Math.abs(lat) <= 90
    && Math.abs(lon) <= 180;
  // What the page reads from an event; anything else is rendered through String()/Number().
  function validEvent(e) {
    return isObj(e) && typeof e.vehicle_id === "string" && e.vehicle_id !== ""
      && typeof e.timestamp === "string" && isObj(e.location)
      && isLatLon(e.location.lat, e.location.lon) && isNum(e.speed_kmh);
  }
  const validPoint = (p) => isObj(p) && isLatLon(p.lat, p.lon) && isNum(p.speed_kmh);
  const parked = (e) => isObj(e) && e.ignition === false;  // reports once a minute, stands

  // ----------------------------------------------------------------- requests
  const FETCH_TIMEOUT_MS = 8000;     // any answer slower than this is given up (and retried)
  const NETWORK_TIMEOUT_MS = 30000;  // GET /network may be megabytes
  const RETRY_MIN_MS = 2000;         // failed data is asked again after 2, 4, 8 ... 30 s
  const RETRY_MAX_MS = 30000;
  const PATIENCE_MAX_MS = 60000;     // each retry waits longer for its answer: 8, 16, 32, 60 s
  const patience = (wait) => Math.min(FETCH_TIMEOUT_MS * wait / RETRY_MIN_MS, PATIENCE_MAX_MS);
  // fetch with a deadline; never throws. {status (0: no answer), json, body, error}
  async function request(path, opts) {
    const o = opts || {};
    const timeoutMs = o.timeoutMs || FETCH_TIMEOUT_MS;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const r = await fetch(path, { method: o.method || "GET", signal: ctl.signal,
        headers: Object.assign({ Accept: o.accept || "application/json" }, o.headers || {}) });
      try {
        return { status: r.status, json: true, body: await r.json(), error: "" };
      } catch (_) {
        if (ctl.signal.aborted) throw new Error("aborted");
        return { status: r.status, json: false, body: undefined, error: "not JSON" };
      }
    } catch (_) {
      return { status: 0, json: false, body: undefined,
        error: ctl.signal.aborted ? `no answer in ${timeoutMs / 1000} s` : "unreachable" };
    } finally {
      clearTimeout(timer);
    }
  }
  const getJson = (path, opts) => request(path, opts);
  // The body of a 200 JSON answer {items: [...]}: {items} or {why} (what was wrong).
  function itemsOf(res) {
    if (res.status !== 200) return { why: res.status ? `HTTP ${res.status}` : res.error };
    if (!res.json) return { why: "the answer is not JSON" };
    if (!isObj(res.body) || !Array.isArray(res.body.items)) {
      return { why: "unexpected answer (no items list)" };
    }
    return { items: res.body.items };
  }
  const bodyObj = (res) => (res.status === 200 && isObj(res.body) ? res.body : null);

  // ----------------------------------------------------------------- colours
  function speedColor(kmh) {
    if (kmh < 30) return "#22c55e";
    if (kmh < 60) return "#3b82f6";
    if (kmh < 90) return "#eab308";
    if (kmh < 120) return "#f97316";
    return "#ef4444";
  }
  const isViolation = (e) => e.speeding || e.rpm_over_redline;
  function heatWeight(e) {
    const w = Math.min(1, e.speed_kmh / 160);
    return isViolation(e) ? Math.min(1, w * 2 + 0.35) : w;
  }

  // ----------------------------------------------------------------- map
  const map = L.map("map", { preferCanvas: true, zoomControl: true, attributionControl: true })
    .setView([48.137, 11.575], 12);
  // Layer toggles, remembered in this browser (localStorage).
  const LAYERS_KEY = "fleetstream.layers";
  const layerPrefs = (() => {
    try { return JSON.parse(localStorage.getItem(LAYERS_KEY) || "{}") || {}; } catch (_) { return {}; }
  })();
  function toggle(id, name, fallback, apply) {
    const box = $(id);
    box.checked = typeof layerPrefs[name] === "boolean" ? layerPrefs[name] : fallback;
    box.addEventListener("change", () => {
      layerPrefs[name] = box.checked;
      localStorage.setItem(LAYERS_KEY, JSON.stringify(layerPrefs));
      apply(box.checked);
    });
    apply(box.checked);
  }
  function showLayer(layer) {
    return (on) => { if (on) layer.addTo(map); else map.removeLayer(layer); };
  }

  // The road network (GET /network) is the base layer: the map reads as a city offline.
  map.createPane("roads").style.zIndex = 250;
  const roadRenderer = L.canvas({ pane: "roads" });
  const ROAD_STYLE = {
    highway: { color: "#f59e0b", weight: 5 },
    rural: { color: "#94a3b8", weight: 3 },
    urban: { color: "#cbd5e1", weight: 1.5 },
  };
  const props = (f) => (isObj(f.properties) ? f.properties : {});
  const roadLayer = L.geoJSON(null, {
    pane: "roads",
    style: (f) => Object.assign({ opacity: 0.95, interactive: false, renderer: roadRenderer,
      lineCap: "round" }, ROAD_STYLE[props(f).road_type] || ROAD_STYLE.urban),
    pointToLayer: (f, ll) => L.circleMarker(ll, {
      renderer: roadRenderer, pane: "roads", interactive: false,
      radius: props(f).feature === "light" ? 2 : 4,
      color: props(f).feature === "light" ? "#dc2626" : "#7c3aed",
      fillColor: props(f).feature === "light" ? "#dc2626" : "#ede9fe",
      weight: 1, fillOpacity: 0.9,
    }),
  });
  let roadsLoaded = false;
  let roadsLoading = false;
  async function loadNetwork() {
    if (roadsLoading) return;
    roadsLoading = true;
    try {
      const r = await getJson("/network", { accept: "application/geo+json",
                                            timeoutMs: NETWORK_TIMEOUT_MS });
      if (r.status === 404) { setText("network-info", "no road network yet"); problem("/network", ""); return; }
      const doc = bodyObj(r);
      if (!doc || !Array.isArray(doc.features)) {
        problem("/network", r.status !== 200 ? (r.status ? `HTTP ${r.status}` : r.error)
          : r.json ? "unexpected answer (no features)" : "the answer is not JSON");
        return;
      }
      roadLayer.clearLayers();
      const features = doc.features.filter((f) => isObj(f) && isObj(f.geometry));
      problem("/network", "");
      try {
        roadLayer.addData({ type: "FeatureCollection", features });
      } catch (err) {
        problem("/network", "some features could not be drawn: " + errText(err));
      }
      roadsLoaded = true;
      const roads = features.filter((f) => props(f).feature === "road").length;
      const km = Number(doc.road_km);
      setText("network-info", `${String(doc.name || "network")}: ${roads} roads`
        + (Number.isFinite(km) ? `, ${km.toFixed(1)} km` : ""));
      if (!fitted && roadLayer.getBounds().isValid()) map.fitBounds(roadLayer.getBounds(), { maxZoom: 15 });
    } catch (err) {
      problem("/network", "could not be shown: " + errText(err));
    } finally {
      roadsLoading = false;
    }
  }

  const tileUrl = document.body.dataset.tileUrl || "";
  const tiles = tileUrl ? L.tileLayer(tileUrl, {
    maxZoom: 19,
    attribution: "&copy; OpenStreetMap contributors",
    errorTileUrl: "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==",
  }) : null;
  const heat = L.heatLayer([], { radius: 14, blur: 14, maxZoom: 18, max: 1.0, minOpacity: 0.2 });
  // Trail and markers draw on canvases above the heatmap's.
  map.createPane("trails").style.zIndex = 450;
  map.createPane("vehicles").style.zIndex = 460;
  const trailRenderer = L.canvas({ pane: "trails" });
  const vehicleRenderer = L.canvas({ pane: "vehicles" });
  const trailLayer = L.layerGroup();
  const markerLayer = L.layerGroup().addTo(map);

  // ----------------------------------------------------------------- state
  const latest = new Map();        // vehicle_id -> event
  const markers = new Map();       // vehicle_id -> L.circleMarker
  const dirty = new Set();         // vehicles whose marker needs an update
  const seenAt = new Map();        // vehicle_id -> Date.now() when its last event came in
  const heatPoints = [];
  let followed = "";
  let userPicked = false;
  let fitted = false;
  let trail = [];                  // [{lat, lon, speed_kmh}]
  let trailDirty = false;
  let chartDirty = false;
  let pickerDirty = false;
  let statsDirty = false;

  toggle("toggle-roads", "roads", true, showLayer(roadLayer));
  toggle("toggle-trail", "trail", true, showLayer(trailLayer));
  toggle("toggle-heat", "heatmap", true, (on) => {
    if (!on) {
      // leaflet.heat draws on the next animation frame and reads its map then: a frame still
      // pending when the layer leaves the map would throw ("reading 'getSize'" of null).
      if (heat._frame) { L.Util.cancelAnimFrame(heat._frame); heat._frame = null; }
      map.removeLayer(heat);
      return;
    }
    heat.addTo(map);
    heat.setLatLngs(heatPoints);
  });
  if (tiles) toggle("toggle-tiles", "tiles", navigator.onLine, showLayer(tiles));
  else $("toggle-tiles-box").hidden = true;

  // ----------------------------------------------------------------- chart
  const chart = new Chart($("chart"), {
    type: "line",
    data: {
      labels: [],
      datasets: [
        { label: "Speed (km/h)", data: [], yAxisID: "y", borderColor: "#2563eb",
          backgroundColor: "rgba(37,99,235,.12)", fill: true, pointRadius: 0, tension: 0.25,
          borderWidth: 2 },
        { label: "RPM", data: [], yAxisID: "y1", borderColor: "#f97316", pointRadius: 0,
          tension: 0.25, borderWidth: 1.5 },
      ],
    },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "top", labels: { boxWidth: 12 } } },
      scales: {
        x: { ticks: { maxTicksLimit: 8, autoSkip: true }, grid: { display: false } },
        y: { position: "left", beginAtZero: true, title: { display: true, text: "km/h" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
              title: { display: true, text: "rpm" } },
      },
    },
  });
  function chartPush(e) {
    const d = chart.data;
    d.labels.push(String(e.timestamp).slice(11, 19));
    d.datasets[0].data.push(e.speed_kmh);
    d.datasets[1].data.push(e.engine_rpm);
    if (d.labels.length > CHART_MAX) {
      d.labels.shift(); d.datasets[0].data.shift(); d.datasets[1].data.shift();
    }
    chartDirty = true;
  }
  function chartReset() {
    chart.data.labels = [];
    chart.data.datasets.forEach((ds) => { ds.data = []; });
    chartDirty = true;
  }

  // ----------------------------------------------------------------- events in
  function ingest(e) {
    const prev = latest.get(e.vehicle_id);
    if (prev && prev.timestamp > e.timestamp) return;   // late event: keep the newer one
    if (!prev) pickerDirty = true;
    latest.set(e.vehicle_id, e);
    seenAt.set(e.vehicle_id, Date.now());
    dirty.add(e.vehicle_id);
    heatPoints.push([e.location.lat, e.location.lon, heatWeight(e)]);
    if (heatPoints.length > HEAT_MAX) heatPoints.splice(0, heatPoints.length - HEAT_MAX);
    if (autoFollows(e.vehicle_id)) follow(e.vehicle_id, false);
    if (e.vehicle_id === followed) {
      trail.push({ lat: e.location.lat, lon: e.location.lon, speed_kmh: e.speed_kmh });
      if (trail.length > TRAIL_MAX) trail.shift();
      trailDirty = true;
      chartPush(e);
      statsDirty = true;
    }
    if (isViolation(e)) addViolation(e, true);
  }
  // Events from one answer or frame: malformed ones are skipped and counted, and one that
  // fails anyway never keeps the others out.
  function ingestAll(items, source, each) {
    let bad = 0;
    for (const e of items) {
      if (!validEvent(e)) { bad++; continue; }
      try { each(e); } catch (err) { bad++; console.warn("dashboard:", source, err); }
    }
    skipped(source, bad);
  }

  // A vehicle the web API no longer reports leaves the map, the picker and the render queue.
  function removeVehicle(vid) {
    const m = markers.get(vid);
    if (m) markerLayer.removeLayer(m);
    markers.delete(vid);
    latest.delete(vid);
    seenAt.delete(vid);
    dirty.delete(vid);
    pickerDirty = true;
  }

  // ----------------------------------------------------------------- violations table
  const vBody = document.querySelector("#violations tbody");
  const vKeys = new Set();
  function addViolation(e, atTop) {
    const key = e.vehicle_id + "|" + e.timestamp;
    if (vKeys.has(key)) return;
    vKeys.add(key);
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    tr.title = String(e.timestamp);
    const type = e.speeding && e.rpm_over_redline ? "both"
      : e.speeding ? "speeding" : "redline";
    const cells = [
      String(e.timestamp).slice(11, 19),
      e.vehicle_id,
      type === "both" ? "speeding + redline" : type,
      Number(e.speed_kmh).toFixed(1),
      String(e.speed_limit_kmh),
      String(e.engine_rpm),
      String(e.road_type),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2) td.className = "type-" + type;
      tr.appendChild(td);
    });
    if (atTop) vBody.insertBefore(tr, vBody.firstChild); else vBody.appendChild(tr);
    $("violations-empty").hidden = true;
    while (vBody.rows.length > VIOLATION_ROWS) {
      vKeys.delete(vBody.rows[vBody.rows.length - 1].dataset.key);
      vBody.deleteRow(vBody.rows.length - 1);
    }
  }

  // ----------------------------------------------------------------- following
  async function follow(vid, byUser) {
    try {
      await followNow(vid, byUser);
    } catch (err) {
      problem("follow", "failed: " + errText(err));
    }
  }
  async function followNow(vid, byUser) {
    if (byUser) userPicked = true;
    followed = vid;
    $("vehicle-picker").value = vid;
    trail = [];
    trailDirty = true;
    chartReset();
    statsDirty = true;
    markers.forEach((m, id) => styleMarker(m, latest.get(id)));
    problem("/telemetry/trails", "");
    problem("/telemetry/recent", "");
    if (!vid) return;
    await loadFollowed(vid, true, true, RETRY_MIN_MS);
    const e = latest.get(vid);
    if (e && byUser) map.setView([e.location.lat, e.location.lon], Math.max(map.getZoom(), 16));
  }
  // The followed car's trail and chart history; a part that fails is asked again later.
  async function loadFollowed(vid, wantTrail, wantChart, wait) {
    const q = encodeURIComponent(vid);
    const none = Promise.resolve(null);
    const [t, r] = await Promise.all([
      wantTrail ? getJson(`/telemetry/trails?vehicle_id=${q}`, { timeoutMs: patience(wait) }) : none,
      wantChart ? getJson(`/telemetry/recent?vehicle_id=${q}&limit=${CHART_MAX}`,
                          { timeoutMs: patience(wait) }) : none,
    ]);
    if (followed !== vid) return;
    const again = ` (asking again in ${Math.round(wait / 1000)} s)`;
    let trailFailed = false, chartFailed = false;
    if (t) {
      const trails = itemsOf(t);
      trailFailed = Boolean(trails.why);
      problem("/telemetry/trails", trailFailed ? trails.why + again : "");
      const mine = trailFailed ? null : trails.items.find((x) => isObj(x) && x.vehicle_id === vid
        && Array.isArray(x.points));
      if (mine) {
        const pts = mine.points.filter(validPoint)
          .map((p) => ({ lat: p.lat, lon: p.lon, speed_kmh: p.speed_kmh }));
        skipped("/telemetry/trails", mine.points.length - pts.length);
        trail = pts.concat(trail).slice(-TRAIL_MAX);
        trailDirty = true;
      }
    }
    if (r) {
      const recent = itemsOf(r);
      chartFailed = Boolean(recent.why);
      problem("/telemetry/recent", chartFailed ? recent.why + again : "");
      if (!chartFailed) {
        chartReset();
        ingestAll(recent.items, "/telemetry/recent", (e) => { if (e.vehicle_id === vid) chartPush(e); });
      }
    }
    if (trailFailed || chartFailed) {
      setTimeout(() => {
        if (followed === vid) {
          loadFollowed(vid, trailFailed, chartFailed, Math.min(wait * 2, RETRY_MAX_MS))
            .catch((err) => problem("follow", "failed: " + errText(err)));
        }
      }, wait);
    }
  }
  $("vehicle-picker").addEventListener("change", (ev) => follow(ev.target.value, true));
  // Until the user picks a car the page follows one that drives: a parked car (ignition off,
  // reporting once a minute) is left for the next car that drives.
  function autoFollows(vid) {  // a page nobody steers: nothing followed yet, or a parked car
    return !userPicked && (!followed || (vid !== followed && !parked(latest.get(vid))
                                         && parked(latest.get(followed))));
  }
  function firstDriving(ids) {
    return ids.find((id) => !parked(latest.get(id))) || ids[0] || "";
  }
  // The followed car left: follow the first one still reporting (or none, until one does).
  function followNext() {
    userPicked = false;
    follow(firstDriving(Array.from(latest.keys()).sort()), false);
  }

  function styleMarker(m, e) {
    if (!e) return;
    const me = e.vehicle_id === followed;
    m.setStyle({
      radius: me ? 9 : 6,
      color: me ? "#0f172a" : "#ffffff",
      weight: me ? 3 : 1.5,
      fillColor: speedColor(e.speed_kmh),
      fillOpacity: 0.95,
    });
    if (me) m.bringToFront();
  }

  // ----------------------------------------------------------------- rendering (throttled)
  // Each part takes its work off the queue before doing it, and fails on its own: one bad
  // entry or one exception costs at most that part of one frame, never the next frames.
  function renderMarkers() {
    const ids = Array.from(dirty);
    dirty.clear();
    let bad = 0;
    for (const vid of ids) {
      const e = latest.get(vid);
      if (!e) continue;                 // removed since it was queued
      try {
        let m = markers.get(vid);
        const ll = [e.location.lat, e.location.lon];
        if (!m) {
          m = L.circleMarker(ll, { radius: 6, renderer: vehicleRenderer, pane: "vehicles" });
          const tip = document.createElement("span");
          tip.textContent = vid;
          m.bindTooltip(tip, { className: "vehicle-tip", direction: "top", offset: [0, -6] });
          m.on("click", () => follow(vid, true));
          m.addTo(markerLayer);
          markers.set(vid, m);
        } else {
          m.setLatLng(ll);
        }
        styleMarker(m, e);
      } catch (err) {
        bad++;
        console.warn("dashboard: marker", vid, err);
      }
    }
    if (ids.length) {
      setText("marker-count", String(markers.size));
      if (map.hasLayer(heat)) heat.setLatLngs(heatPoints);
      if (!fitted && markers.size) {
        fitted = true;
        const b = L.latLngBounds(Array.from(latest.values(), (x) => [x.location.lat, x.location.lon]));
        map.fitBounds(b.pad(0.3), { maxZoom: 14 });
      }
    }
    if (bad) throw new Error(`${bad} marker(s) could not be drawn`);
  }
  function renderTrail() {
    if (!trailDirty) return;
    trailDirty = false;
    trailLayer.clearLayers();
    for (let i = 1; i < trail.length; i++) {
      const a = trail[i - 1], b = trail[i];
      L.polyline([[a.lat, a.lon], [b.lat, b.lon]],
        { color: speedColor(b.speed_kmh), weight: 5, opacity: 0.9, interactive: false,
          lineCap: "round", renderer: trailRenderer, pane: "trails" })
        .addTo(trailLayer);
    }
    setText("trail-count", String(trail.length));
    const last = trail[trail.length - 1];
    if (last && userPicked && !map.getBounds().pad(-0.15).contains([last.lat, last.lon])) {
      map.panTo([last.lat, last.lon]);
    }
  }
  function renderChart() {
    if (!chartDirty) return;
    chartDirty = false;
    chart.update("none");
  }
  function renderStats() {
    if (!statsDirty) return;
    statsDirty = false;
    const e = latest.get(followed);
    setText("stat-vehicle", followed || "—");
    setText("chart-vehicle", followed || "");
    if (!e) return;
    setText("stat-speed", Number(e.speed_kmh).toFixed(1));
    $("stat-speed").className = e.speeding ? "over" : "";
    setText("stat-rpm", String(e.engine_rpm));
    $("stat-rpm").className = e.rpm_over_redline ? "over" : "";
    setText("stat-gear", e.gear === 0 ? "N" : String(e.gear));
    setText("stat-road", String(e.road_type));
    setText("stat-limit", String(e.speed_limit_kmh));
    setText("stat-fuel", Number(e.fuel_level_pct).toFixed(1));
    setText("stat-time", String(e.timestamp).replace("T", " ").slice(0, 19) + " UTC");
    setText("stat-pos", `${Number(e.location.lat).toFixed(5)}, ${Number(e.location.lon).toFixed(5)}`);
    const faults = Array.isArray(e.fault_codes) ? e.fault_codes.map(String) : [];
    setText("stat-faults", faults.length ? faults.join(", ") : "none");
  }
  function renderPicker() {
    if (!pickerDirty) return;
    pickerDirty = false;
    const sel = $("vehicle-picker");
    const ids = Array.from(latest.keys()).sort();
    sel.replaceChildren();
    for (const id of ids) {
      const o = document.createElement("option");
      o.value = id;
      o.textContent = id;
      sel.appendChild(o);
    }
    sel.value = followed;
  }
  function render() {
    guard("render markers", renderMarkers);
    guard("render trail", renderTrail);
    guard("render chart", renderChart);
    guard("render stats", renderStats);
    guard("render picker", renderPicker);
  }
  setInterval(render, RENDER_MS);

  // ----------------------------------------------------------------- the stream
  const WS_OPEN_TIMEOUT_MS = 10000;
  let backoff = 500;
  function setConn(state, text) {
    const el = $("conn");
    el.dataset.state = state;
    el.textContent = "stream: " + text;
  }
  function reconnectLater(again) {
    setTimeout(again, backoff);
    backoff = Math.min(backoff * 2, 10000);
  }
  function onFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (_) { skipped("/ws", 1); return; }
    if (!isObj(frame)) { skipped("/ws", 1); return; }
    if (frame.type === "snapshot" || frame.type === "batch") {
      if (Array.isArray(frame.items)) ingestAll(frame.items, "/ws", ingest);
      else skipped("/ws", 1);
    } else if (frame.type === "event") {
      ingestAll([frame.data], "/ws", ingest);
    }
  }
  function connect() {
    let sock;
    try {
      const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
      sock = new WebSocket(`${proto}//${window.location.host}/ws?batch=1`);
    } catch (err) {
      setConn("closed", "reconnecting");
      reconnectLater(connect);
      return;
    }
    setConn("connecting", "connecting");
    // a handshake that never completes is given up, like a closed stream
    const opening = setTimeout(() => { if (sock.readyState === WebSocket.CONNECTING) sock.close(); },
                               WS_OPEN_TIMEOUT_MS);
    sock.onopen = () => { clearTimeout(opening); backoff = 500; setConn("open", "live"); };
    sock.onmessage = (msg) => {
      try { onFrame(msg.data); } catch (err) { problem("/ws", "failed: " + errText(err)); }
    };
    sock.onclose = () => {
      clearTimeout(opening);
      setConn("closed", "reconnecting");
      reconnectLater(connect);
    };
  }

  // ----------------------------------------------------------------- alert strip
  // The last ALERT_ROWS alerts from WS /ws/events?kind=alert: a snapshot, then live.
  const alertList = $("alerts");
  const alertIds = new Set();
  let alertBackoff = 500;
  function alertTime(iso) {  // the date too when it is not today's (an older alert)
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const at = d.toISOString();
    const day = at.slice(0, 10) === new Date().toISOString().slice(0, 10) ? "" : at.slice(0, 10) + " ";
    return day + at.slice(11, 19) + " UTC";
  }
  function addAlert(a) {
    if (!isObj(a) || a.kind !== "alert" || alertIds.has(String(a.event_id))) return;
    alertIds.add(String(a.event_id));
    const li = document.createElement("li");
    li.className = "alert-item";
    li.dataset.eventId = String(a.event_id);
    li.title = String(a.message || "");
    const parts = [["alert-time", alertTime(a.time)], ["alert-vehicle", a.vehicle_id],
                   ["alert-rule", a.rule_id]];
    parts.forEach(([cls, text]) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = String(text);
      li.appendChild(span);
    });
    alertList.insertBefore(li, alertList.firstChild);
    while (alertList.children.length > ALERT_ROWS) {
      alertIds.delete(alertList.lastChild.dataset.eventId);
      alertList.removeChild(alertList.lastChild);
    }
    $("alerts-empty").hidden = true;
  }
  function onAlertFrame(data) {
    let frame;
    try { frame = JSON.parse(data); } catch (_) { skipped("/ws/events", 1); return; }
    if (!isObj(frame)) { skipped("/ws/events", 1); return; }
    if (frame.type === "snapshot") {
      if (!Array.isArray(frame.items)) { skipped("/ws/events", 1); return; }
      for (const a of frame.items.slice(-ALERT_ROWS)) guard("alerts", () => addAlert(a));
    } else if (frame.type === "event") {
      guard("alerts", () => addAlert(frame.data));
    }
  }
  function connectAlerts() {
    const strip = $("alert-strip");
    const again = () => {
      strip.dataset.state = "closed";
      setTimeout(connectAlerts, alertBackoff);
      alertBackoff = Math.min(alertBackoff * 2, 30000);
    };
    let sock;
    try {
      const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
      sock = new WebSocket(`${proto}//${window.location.host}/ws/events?kind=alert`);
    } catch (_) {
      again();
      return;
    }
    const opening = setTimeout(() => { if (sock.readyState === WebSocket.CONNECTING) sock.close(); },
                               WS_OPEN_TIMEOUT_MS);
    sock.onopen = () => { clearTimeout(opening); alertBackoff = 500; strip.dataset.state = "open"; };
    sock.onmessage = (msg) => {
      try { onAlertFrame(msg.data); } catch (err) { problem("/ws/events", "failed: " + errText(err)); }
    };
    sock.onclose = () => { clearTimeout(opening); again(); };
  }

  // ----------------------------------------------------------------- polling
  const plain = (x) => (typeof x === "string" || isNum(x) ? String(x) : "—");
  async function pollProducer() {
    const s = await getJson("/status");
    const el = $("producer");
    const body = bodyObj(s);
    if (s.status === 200 && !(body && typeof body.running === "boolean")) {
      problem("/status", s.json ? "unexpected answer (no running flag)" : "the answer is not JSON");
      return;
    }
    problem("/status", "");
    if (body) {
      el.dataset.state = body.running ? "running" : "stopped";
      el.textContent = "producer: " + (body.running ? "running" : "stopped");
      setText("fleet-producer-rate", `${plain(body.rate_hz)} Hz × ${plain(body.vehicles)}`);
    } else {
      el.dataset.state = "down";
      el.textContent = "producer: not reachable";
      setText("fleet-producer-rate", "—");
    }
  }
  async function pollVehicles() {  // vehicles silent past the server's timeout leave the map
    const asked = Date.now();
    const v = itemsOf(await getJson("/vehicles"));
    if (v.items && !v.items.every((x) => typeof x === "string")) {
      v.why = "unexpected answer (items are not vehicle ids)";
    }
    problem("/vehicles", v.why || "");
    if (v.why) return;
    const active = new Set(v.items);
    let followedLeft = false;
    for (const vid of Array.from(latest.keys())) {
      // an event that came in while this answer was on its way is newer than the answer
      if (active.has(vid) || (seenAt.get(vid) || 0) >= asked) continue;
      removeVehicle(vid);
      if (vid === followed) followedLeft = true;
    }
    setText("marker-count", String(markers.size));
    if (followedLeft) followNext();
  }
  async function pollStats() {
    const s = await getJson("/stats");
    const body = bodyObj(s);
    if (s.status !== 200) { problem("/stats", s.status ? `HTTP ${s.status}` : s.error); return; }
    if (!body) { problem("/stats", s.json ? "unexpected answer" : "the answer is not JSON"); return; }
    problem("/stats", "");
    setText("fleet-vehicles", plain(body.vehicles_reporting));
    setText("fleet-rate", isNum(body.events_per_s) ? body.events_per_s.toFixed(1) : "—");
    setText("fleet-consumed", plain(body.consumed_total));
    setText("fleet-violations", plain(body.violations_total));
    setText("fleet-malformed", plain(body.malformed_total));
  }
  let polling = false;
  async function pollStatus() {
    if (polling) return;            // the previous poll is still waiting for answers
    polling = true;
    try {
      const jobs = [["/status", pollProducer], ["/vehicles", pollVehicles], ["/stats", pollStats]];
      if (!roadsLoaded) loadNetwork();
      await Promise.all(jobs.map(([source, job]) => job().catch((err) => {
        problem(source, "could not be shown: " + errText(err));
      })));
    } finally {
      polling = false;
    }
  }

  // ----------------------------------------------------------------- control
  async function control(path, okText) {
    const btns = [$("start"), $("stop")];
    btns.forEach((b) => { b.disabled = true; });
    try {
      const r = await request(path, { method: "POST", headers: authHeaders() });
      const body = isObj(r.body) ? r.body : {};
      if (r.status >= 200 && r.status < 300) {
        say(okText(body), "info");
      } else if (r.status === 401) {
        $("token-box").hidden = false;
        tokenInput.focus();
        say("This API needs a token for Start/Stop: enter it in the Token box.", "error");
      } else if (r.status === 0) {
        say("request failed: " + r.error, "error");
      } else {
        say(typeof body.error === "string" ? body.error : `HTTP ${r.status}`, "error");
      }
    } catch (err) {
      say("request failed: " + errText(err), "error");
    } finally {
      btns.forEach((b) => { b.disabled = false; });
      pollStatus();
    }
  }
  $("start").addEventListener("click", () => {
    const rate = $("rate").value.trim();
    const q = rate ? `?rate_hz=${encodeURIComponent(rate)}` : "";
    control("/start-sim" + q, (b) => `Simulation started at ${plain(b.rate_hz)} Hz.`);
  });
  $("stop").addEventListener("click", () => control("/stop-sim", () => "Simulation stopped."));
  $("controls").addEventListener("submit", (ev) => ev.preventDefault());

  // ----------------------------------------------------------------- start
  // Start-up data, each on its own: a failure (no answer in time, not JSON, another shape)
  // is shown in the status line and asked again later; it never holds up the stream.
  async function load(path, source, apply, delay) {
    const wait = delay || RETRY_MIN_MS;
    let res;
    try {
      res = itemsOf(await getJson(path, { timeoutMs: patience(wait) }));
      if (res.items) apply(res.items);
    } catch (err) {
      res = { why: "could not be shown: " + errText(err) };
    }
    if (!res.why) { problem(source, ""); return; }
    problem(source, `${res.why} (asking again in ${Math.round(wait / 1000)} s)`);
    setTimeout(() => load(path, source, apply, Math.min(wait * 2, RETRY_MAX_MS)), wait);
  }
  function seedLatest(items) {
    const seeded = [];
    ingestAll(items, "/telemetry/latest", (e) => {
      const prev = latest.get(e.vehicle_id);
      if (prev && prev.timestamp >= e.timestamp) return;  // the stream's is as new or newer
      if (!prev) pickerDirty = true;
      latest.set(e.vehicle_id, e);
      seenAt.set(e.vehicle_id, Date.now());
      dirty.add(e.vehicle_id);
      seeded.push(e.vehicle_id);
    });
    const pick = firstDriving(seeded);
    if (pick && autoFollows(pick)) follow(pick, false);
  }
  function boot() {
    connect();
    connectAlerts();
    load("/telemetry/violations?limit=" + VIOLATION_ROWS, "/telemetry/violations",
         (items) => ingestAll(items, "/telemetry/violations", (e) => addViolation(e, false)));
    load("/telemetry/latest", "/telemetry/latest", seedLatest);
    pollStatus();
    setInterval(pollStatus, POLL_MS);
  }
  boot();
})();
