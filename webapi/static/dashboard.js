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

  async function getJson(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    return { status: r.status, body };
  }

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
  const roadLayer = L.geoJSON(null, {
    pane: "roads",
    style: (f) => Object.assign({ opacity: 0.95, interactive: false, renderer: roadRenderer,
      lineCap: "round" }, ROAD_STYLE[f.properties.road_type] || ROAD_STYLE.urban),
    pointToLayer: (f, ll) => L.circleMarker(ll, {
      renderer: roadRenderer, pane: "roads", interactive: false,
      radius: f.properties.feature === "light" ? 2 : 4,
      color: f.properties.feature === "light" ? "#dc2626" : "#7c3aed",
      fillColor: f.properties.feature === "light" ? "#dc2626" : "#ede9fe",
      weight: 1, fillOpacity: 0.9,
    }),
  });
  let roadsLoaded = false;
  async function loadNetwork() {
    try {
      const r = await fetch("/network", { headers: { Accept: "application/geo+json" } });
      if (r.status !== 200) { setText("network-info", "no road network yet"); return false; }
      const doc = await r.json();
      roadLayer.clearLayers();
      roadLayer.addData(doc);
      roadsLoaded = true;
      const roads = doc.features.filter((f) => f.properties.feature === "road").length;
      setText("network-info", `${String(doc.name || "network")}: ${roads} roads, ${Number(doc.road_km).toFixed(1)} km`);
      if (!fitted && roadLayer.getBounds().isValid()) map.fitBounds(roadLayer.getBounds(), { maxZoom: 15 });
      return true;
    } catch (_) { return false; }
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
    if (!e || typeof e.vehicle_id !== "string" || !e.location) return;
    const prev = latest.get(e.vehicle_id);
    if (prev && prev.timestamp > e.timestamp) return;   // late event: keep the newer one
    if (!prev) pickerDirty = true;
    latest.set(e.vehicle_id, e);
    dirty.add(e.vehicle_id);
    heatPoints.push([e.location.lat, e.location.lon, heatWeight(e)]);
    if (heatPoints.length > HEAT_MAX) heatPoints.splice(0, heatPoints.length - HEAT_MAX);
    if (!followed && !userPicked) follow(e.vehicle_id, false);
    if (e.vehicle_id === followed) {
      trail.push({ lat: e.location.lat, lon: e.location.lon, speed_kmh: e.speed_kmh });
      if (trail.length > TRAIL_MAX) trail.shift();
      trailDirty = true;
      chartPush(e);
      statsDirty = true;
    }
    if (isViolation(e)) addViolation(e, true);
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
      e.road_type,
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
    if (byUser) userPicked = true;
    followed = vid;
    $("vehicle-picker").value = vid;
    trail = [];
    trailDirty = true;
    chartReset();
    statsDirty = true;
    markers.forEach((m, id) => styleMarker(m, latest.get(id)));
    if (!vid) return;
    const q = encodeURIComponent(vid);
    const [t, r] = await Promise.all([
      getJson(`/telemetry/trails?vehicle_id=${q}`),
      getJson(`/telemetry/recent?vehicle_id=${q}&limit=${CHART_MAX}`),
    ]).catch(() => [null, null]);
    if (followed !== vid) return;
    if (t && t.status === 200 && t.body.items.length) {
      const pts = t.body.items[0].points.map((p) => ({ lat: p.lat, lon: p.lon, speed_kmh: p.speed_kmh }));
      trail = pts.concat(trail).slice(-TRAIL_MAX);
      trailDirty = true;
    }
    if (r && r.status === 200) {
      chartReset();
      r.body.items.forEach(chartPush);
    }
    const e = latest.get(vid);
    if (e && byUser) map.setView([e.location.lat, e.location.lon], Math.max(map.getZoom(), 16));
  }
  $("vehicle-picker").addEventListener("change", (ev) => follow(ev.target.value, true));

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
  function render() {
    for (const vid of dirty) {
      const e = latest.get(vid);
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
    }
    if (dirty.size) {
      if (map.hasLayer(heat)) heat.setLatLngs(heatPoints);
      setText("marker-count", String(markers.size));
      if (!fitted && markers.size) {
        const b = L.latLngBounds(Array.from(latest.values(), (e) => [e.location.lat, e.location.lon]));
        map.fitBounds(b.pad(0.3), { maxZoom: 14 });
        fitted = true;
      }
    }
    dirty.clear();

    if (trailDirty) {
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
      trailDirty = false;
    }
    if (chartDirty) {
      chart.update("none");
      chartDirty = false;
    }
    if (statsDirty) {
      const e = latest.get(followed);
      setText("stat-vehicle", followed || "—");
      setText("chart-vehicle", followed || "");
      if (e) {
        setText("stat-speed", Number(e.speed_kmh).toFixed(1));
        $("stat-speed").className = e.speeding ? "over" : "";
        setText("stat-rpm", String(e.engine_rpm));
        $("stat-rpm").className = e.rpm_over_redline ? "over" : "";
        setText("stat-gear", e.gear === 0 ? "N" : String(e.gear));
        setText("stat-road", e.road_type);
        setText("stat-limit", String(e.speed_limit_kmh));
        setText("stat-fuel", Number(e.fuel_level_pct).toFixed(1));
        setText("stat-time", String(e.timestamp).replace("T", " ").slice(0, 19) + " UTC");
        setText("stat-pos", `${Number(e.location.lat).toFixed(5)}, ${Number(e.location.lon).toFixed(5)}`);
        setText("stat-faults", (e.fault_codes || []).length ? e.fault_codes.join(", ") : "none");
      }
      statsDirty = false;
    }
    if (pickerDirty) {
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
      pickerDirty = false;
    }
  }
  setInterval(render, RENDER_MS);

  // ----------------------------------------------------------------- the stream
  let ws = null;
  let backoff = 500;
  function setConn(state, text) {
    const el = $("conn");
    el.dataset.state = state;
    el.textContent = "stream: " + text;
  }
  function connect() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${window.location.host}/ws?batch=1`);
    setConn("connecting", "connecting");
    ws.onopen = () => { backoff = 500; setConn("open", "live"); };
    ws.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch (_) { return; }
      if (frame.type === "snapshot" || frame.type === "batch") frame.items.forEach(ingest);
      else if (frame.type === "event") ingest(frame.data);
    };
    ws.onclose = () => {
      setConn("closed", "reconnecting");
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  // ----------------------------------------------------------------- alert strip
  // The last ALERT_ROWS alerts from WS /ws/events?kind=alert: a snapshot, then live.
  const alertList = $("alerts");
  const alertIds = new Set();
  let alertBackoff = 500;
  function alertTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().slice(11, 19) + " UTC";
  }
  function addAlert(a) {
    if (!a || a.kind !== "alert" || alertIds.has(a.event_id)) return;
    alertIds.add(a.event_id);
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
  function connectAlerts() {
    const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${window.location.host}/ws/events?kind=alert`);
    const strip = $("alert-strip");
    sock.onopen = () => { alertBackoff = 500; strip.dataset.state = "open"; };
    sock.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(msg.data); } catch (_) { return; }
      if (frame.type === "snapshot") frame.items.slice(-ALERT_ROWS).forEach(addAlert);
      else if (frame.type === "event") addAlert(frame.data);
    };
    sock.onclose = () => {
      strip.dataset.state = "closed";
      setTimeout(connectAlerts, alertBackoff);
      alertBackoff = Math.min(alertBackoff * 2, 30000);
    };
  }

  // ----------------------------------------------------------------- polling
  async function pollStatus() {
    try {
      const s = await getJson("/status");
      const el = $("producer");
      if (s.status === 200) {
        el.dataset.state = s.body.running ? "running" : "stopped";
        el.textContent = "producer: " + (s.body.running ? "running" : "stopped");
        setText("fleet-producer-rate", `${s.body.rate_hz} Hz × ${s.body.vehicles}`);
      } else {
        el.dataset.state = "down";
        el.textContent = "producer: not reachable";
        setText("fleet-producer-rate", "—");
      }
    } catch (_) { /* next poll */ }
    try {  // vehicles silent past the server's timeout leave the map (no ghosts)
      const v = await getJson("/vehicles");
      if (v.status === 200) {
        const active = new Set(v.body.items);
        for (const [vid, m] of markers) {
          if (active.has(vid)) continue;
          markerLayer.removeLayer(m);
          markers.delete(vid);
          latest.delete(vid);
          pickerDirty = true;
        }
        setText("marker-count", String(markers.size));
      }
    } catch (_) { /* next poll */ }
    if (!roadsLoaded) loadNetwork();
    try {
      const s = await getJson("/stats");
      if (s.status === 200) {
        setText("fleet-vehicles", String(s.body.vehicles_reporting));
        setText("fleet-rate", Number(s.body.events_per_s).toFixed(1));
        setText("fleet-consumed", String(s.body.consumed_total));
        setText("fleet-violations", String(s.body.violations_total));
        setText("fleet-malformed", String(s.body.malformed_total));
      }
    } catch (_) { /* next poll */ }
  }

  // ----------------------------------------------------------------- control
  async function control(path, okText) {
    const btns = [$("start"), $("stop")];
    btns.forEach((b) => { b.disabled = true; });
    try {
      const r = await fetch(path, { method: "POST", headers: authHeaders() });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        say(okText(body), "info");
      } else if (r.status === 401) {
        $("token-box").hidden = false;
        tokenInput.focus();
        say("This API needs a token for Start/Stop: enter it in the Token box.", "error");
      } else {
        say(body.error || `HTTP ${r.status}`, "error");
      }
    } catch (err) {
      say("request failed: " + err, "error");
    } finally {
      btns.forEach((b) => { b.disabled = false; });
      pollStatus();
    }
  }
  $("start").addEventListener("click", () => {
    const rate = $("rate").value.trim();
    const q = rate ? `?rate_hz=${encodeURIComponent(rate)}` : "";
    control("/start-sim" + q, (b) => `Simulation started at ${b.rate_hz} Hz.`);
  });
  $("stop").addEventListener("click", () => control("/stop-sim", () => "Simulation stopped."));
  $("controls").addEventListener("submit", (ev) => ev.preventDefault());

  // ----------------------------------------------------------------- start
  async function boot() {
    const v = await getJson("/telemetry/violations?limit=" + VIOLATION_ROWS).catch(() => null);
    if (v && v.status === 200) v.body.items.forEach((e) => addViolation(e, false));
    const l = await getJson("/telemetry/latest").catch(() => null);
    if (l && l.status === 200) {
      l.body.items.forEach((e) => {
        if (!latest.has(e.vehicle_id)) pickerDirty = true;
        latest.set(e.vehicle_id, e);
        dirty.add(e.vehicle_id);
      });
      if (!followed && l.body.items.length) follow(l.body.items[0].vehicle_id, false);
    }
    connect();
    connectAlerts();
    pollStatus();
    setInterval(pollStatus, POLL_MS);
  }
  boot();
})();
