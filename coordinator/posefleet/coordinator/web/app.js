// posefleet dashboard: live state over Server-Sent Events (the browser reconnects by itself), camera tiles
// with thumbnails and skeletons coloured by track id, sparklines, nodes, scenes in 3D. No dependencies.
"use strict";

let skeleton = [];
const tiles = new Map();   // camera id -> tile elements and state
const scenes = new Map();  // scene name -> scene elements and view angles
const THUMB_W = 320;

function trackColour(id) {
  return id ? `hsl(${(id * 137.508) % 360}, 95%, 55%)` : "#ffffff";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// -- cameras ----------------------------------------------------------------------------------------------
function tileFor(cam) {
  let tile = tiles.get(cam.id);
  if (tile) return tile;
  const root = el("div", { class: "tile", id: `cam-${cam.id}`, "data-camera": cam.id });
  const canvas = el("canvas", { class: "frame", width: THUMB_W, height: 240 });
  const stats = el("div", { class: "stats" });
  const spark = el("canvas", { class: "spark", width: THUMB_W, height: 40 });
  root.append(el("h3", {}, cam.id), canvas, stats, spark);
  document.getElementById("cameras").append(root);
  tile = { root, canvas, stats, spark, image: null, loading: null, shown: null, cam };
  tiles.set(cam.id, tile);
  return tile;
}

// People are tracked poses. Untracked ones (a decoder's weak fragments, track id 0) are drawn only when the
// "untracked poses" box is ticked, and then faintly.
const weakBox = document.getElementById("weak");
weakBox.checked = localStorage.getItem("posefleet.weak") === "1";
weakBox.addEventListener("change", () => {
  localStorage.setItem("posefleet.weak", weakBox.checked ? "1" : "0");
  for (const tile of tiles.values()) paintTile(tile);
});

function drawPoses(ctx, poses, scale) {
  for (const pose of poses) {
    if (!pose.track_id && !weakBox.checked) continue;
    const colour = trackColour(pose.track_id);
    ctx.globalAlpha = pose.track_id ? 1 : 0.35;
    ctx.lineWidth = pose.track_id ? 3 : 1;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    const k = pose.keypoints;  // [{name, x, y, score}]: the one pose shape (posefleet.common.jsonview)
    for (const [a, b] of skeleton) {
      if (!k[a] || !k[b] || k[a].score < 0.2 || k[b].score < 0.2) continue;
      ctx.beginPath();
      ctx.moveTo(k[a].x * scale, k[a].y * scale);
      ctx.lineTo(k[b].x * scale, k[b].y * scale);
      ctx.stroke();
    }
    for (const { x, y, score } of k) {
      if (score < 0.2) continue;
      ctx.beginPath();
      ctx.arc(x * scale, y * scale, 4, 0, 2 * Math.PI);
      ctx.fill();
    }
  }
  ctx.globalAlpha = 1;
}

function paintTile(tile) {
  const cam = tile.cam;
  const ctx = tile.canvas.getContext("2d");
  const scale = cam.width ? THUMB_W / cam.width : 1;
  const height = cam.height ? Math.round(cam.height * scale) : 240;
  if (tile.canvas.height !== height) tile.canvas.height = height;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, tile.canvas.width, tile.canvas.height);
  if (tile.image) ctx.drawImage(tile.image, 0, 0, tile.canvas.width, tile.canvas.height);
  drawPoses(ctx, tile.posesShown || [], scale);
}

function updateTile(cam) {
  const tile = tileFor(cam);
  tile.cam = cam;
  tile.stats.innerHTML =
    `people <b class="people">${cam.people}</b> · ` +
    `in <b class="fps-in">${fmt(cam.input_fps)}</b> FPS · processed <b class="fps">${fmt(cam.processed_fps)}</b> FPS<br>` +
    `ok <b>${cam.ok}</b> · dropped <b>${cam.dropped}</b> · failed <b>${cam.failed}</b> · ` +
    `p50 <b>${fmt(cam.latency_p50_ms)}</b> ms · p99 <b>${fmt(cam.latency_p99_ms)}</b> ms`;
  if (cam.sequence !== null && cam.sequence !== tile.shown && tile.loading === null) {
    const seq = cam.sequence, poses = cam.poses;
    const image = new Image();
    tile.loading = seq;
    image.onload = () => { tile.image = image; tile.shown = seq; tile.posesShown = poses; tile.loading = null; paintTile(tile); };
    image.onerror = () => { tile.loading = null; };
    image.src = `/api/cameras/${encodeURIComponent(cam.id)}/thumbnail.jpg?seq=${seq}`;
  }
  sparkline(tile.spark, cam.history || []);
}

function sparkline(canvas, history) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (history.length < 2) return;
  const series = [[1, "#3ccf6e"], [3, "#ffb347"]];  // processed FPS, latency p99
  for (const [column, colour] of series) {
    const values = history.map((row) => row[column] || 0);
    const top = Math.max(...values, 1e-6);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (values.length - 1)) * canvas.width;
      const y = canvas.height - 2 - (v / top) * (canvas.height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// -- nodes ------------------------------------------------------------------------------------------------
function updateNodes(nodes) {
  const body = document.querySelector("#nodes tbody");
  body.replaceChildren(...nodes.map((n) => {
    const health = el("td", { class: n.healthy ? "ok health" : "bad health" }, n.healthy ? "healthy" : "unhealthy");
    const row = el("tr", { "data-node": n.id },
      el("td", {}, n.id), el("td", {}, n.address), health, el("td", {}, n.model || "–"), el("td", {}, n.device || "–"),
      el("td", {}, n.precision || "–"), el("td", {}, `${n.in_flight}/${n.capacity}`), el("td", {}, fmt(n.fps)), el("td", {}, String(n.done)),
      el("td", {}, String(n.failed)), el("td", {}, n.last_error || ""));
    return row;
  }));
}

// -- scenes -----------------------------------------------------------------------------------------------
function sceneFor(scene) {
  let s = scenes.get(scene.name);
  if (s) return s;
  const root = el("div", { class: "scene", "data-scene": scene.name });
  const space = el("canvas", { class: "space", width: 480, height: 360 });
  const views = el("div", { class: "views" });
  root.append(el("h3", {}, `scene ${scene.name}`), space, views);
  document.getElementById("scenes").append(root);
  s = { root, space, views, yaw: 0.6, pitch: 0.35, scene, viewCanvases: new Map() };
  let drag = null;
  space.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; space.setPointerCapture(e.pointerId); });
  space.addEventListener("pointerup", () => { drag = null; });
  space.addEventListener("pointermove", (e) => {
    if (!drag) return;
    s.yaw += (e.clientX - drag[0]) * 0.01;
    s.pitch = Math.max(-1.5, Math.min(1.5, s.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY];
    paintSpace(s);
  });
  scenes.set(scene.name, s);
  return s;
}

function paintSpace(s) {
  const ctx = s.space.getContext("2d");
  const w = s.space.width, h = s.space.height;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, w, h);
  // A 3D person's keypoints: [{name, x, y, z, ...}] in metres, x null where a joint was not triangulated.
  const xyz = (j) => (j && j.x !== null ? [j.x, j.y, j.z] : null);
  const joints = s.scene.persons.flatMap((p) => p.keypoints.map(xyz).filter(Boolean));
  if (!joints.length) return;
  const centre = [0, 1, 2].map((i) => joints.reduce((a, j) => a + j[i], 0) / joints.length);
  const cy = Math.cos(s.yaw), sy = Math.sin(s.yaw), cp = Math.cos(s.pitch), sp = Math.sin(s.pitch);
  const scale = Math.min(w, h) / 4;  // metres to pixels
  const project = (j) => {
    const x = j[0] - centre[0], y = j[1] - centre[1], z = j[2] - centre[2];  // z up (the calibration's world)
    const rx = cy * x - sy * y, ry = sy * x + cy * y;
    const up = cp * z - sp * ry;
    return [w / 2 + rx * scale, h / 2 - up * scale];
  };
  ctx.strokeStyle = "#333";  // the floor under the people
  for (let i = -2; i <= 2; i++) {
    for (const [a, b] of [[[i, -2, 0], [i, 2, 0]], [[-2, i, 0], [2, i, 0]]]) {
      const pa = project([a[0] + centre[0], a[1] + centre[1], 0]), pb = project([b[0] + centre[0], b[1] + centre[1], 0]);
      ctx.beginPath(); ctx.moveTo(...pa); ctx.lineTo(...pb); ctx.stroke();
    }
  }
  ctx.lineWidth = 3;
  for (const person of s.scene.persons) {
    ctx.strokeStyle = ctx.fillStyle = trackColour(person.id);
    for (const [a, b] of skeleton) {
      const ja = xyz(person.keypoints[a]), jb = xyz(person.keypoints[b]);
      if (!ja || !jb) continue;
      ctx.beginPath(); ctx.moveTo(...project(ja)); ctx.lineTo(...project(jb)); ctx.stroke();
    }
  }
}

function paintViews(s) {
  for (const [camera, view] of Object.entries(s.scene.reprojections)) {
    let canvas = s.viewCanvases.get(camera);
    if (!canvas) {
      canvas = el("canvas", { class: "view", width: 240, height: 135, title: camera });
      s.views.append(canvas);
      s.viewCanvases.set(camera, canvas);
    }
    const scale = 240 / view.width;
    canvas.height = Math.round(view.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const tile = tiles.get(camera);
    if (tile && tile.image) ctx.drawImage(tile.image, 0, 0, canvas.width, canvas.height);
    drawPoses(ctx, view.persons, scale);  // each person's joints projected: 2D poses of the person's id
  }
}

// -- the stream -------------------------------------------------------------------------------------------
function render(state) {
  const cams = new Set(state.cameras.map((c) => c.id));
  for (const [id, tile] of tiles) if (!cams.has(id)) { tile.root.remove(); tiles.delete(id); }
  state.cameras.forEach(updateTile);
  if (!state.cameras.length) document.getElementById("cameras").replaceChildren(el("p", { class: "empty" }, "no camera streams"));
  else document.querySelectorAll("#cameras > .empty").forEach((n) => n.remove());
  updateNodes(state.nodes);
  const names = new Set(state.scenes.map((s) => s.name));
  for (const [name, s] of scenes) if (!names.has(name)) { s.root.remove(); scenes.delete(name); }
  document.getElementById("scenes-section").hidden = !state.scenes.length;
  for (const scene of state.scenes) {
    const s = sceneFor(scene);
    s.scene = scene;
    paintSpace(s);
    paintViews(s);
  }
  const healthy = state.nodes.filter((n) => n.healthy).length;
  document.getElementById("summary").textContent =
    `${state.cameras.length} cameras · ${healthy} of ${state.nodes.length} nodes healthy`;
}

function connect() {
  const link = document.getElementById("link");
  const events = new EventSource("/api/events");
  events.addEventListener("skeleton", (e) => { skeleton = JSON.parse(e.data); });
  // The login expired or was revoked: stop, and reload to ask for a new one.
  events.addEventListener("logout", () => { events.close(); link.textContent = "logged out"; link.className = "bad"; });
  events.onopen = () => { link.textContent = "live"; link.className = "ok"; };
  events.onerror = () => { link.textContent = "reconnecting…"; link.className = "bad"; };
  events.onmessage = (e) => render(JSON.parse(e.data));
}

connect();
