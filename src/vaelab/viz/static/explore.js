// vaelab explore: the page talks to the local server's JSON API and paints decoded pixels on canvases.
// No libraries, no network beyond the server that served this file.
"use strict";

(() => {
  const R = 3; // the plane and the sliders span [-R, R] in each latent dim
  const MAX_STRIP = 20; // a CVAE with at most this many classes shows the point as every class
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const $ = (id) => document.getElementById(id);
  const state = {
    info: null, z: [], dx: 0, dy: 1, label: null, cls: null, picks: { a: null, b: null }, next: "a",
    pageOffset: 0, sliders: new Map(), dragging: false,
  };

  // ---- server -----------------------------------------------------------------------------
  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const res = await fetch(path, init);
    const doc = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(doc.error || `${res.status} ${res.statusText}`);
    return doc;
  }

  function say(msg) { $("status").textContent = msg || ""; }

  // ---- pixels -----------------------------------------------------------------------------
  // images = {shape: [N, H, W, C], data: base64 uint8}: image i painted onto `canvas`, upscaled crisply.
  function unpack(images) {
    const raw = atob(images.data);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return { bytes, n: images.shape[0], h: images.shape[1], w: images.shape[2], c: images.shape[3] };
  }

  function paint(canvas, px, i) {
    const { bytes, h, w, c } = px;
    const img = new ImageData(w, h);
    const base = i * h * w * c;
    for (let p = 0; p < h * w; p++) {
      const s = base + p * c;
      img.data[4 * p] = bytes[s];
      img.data[4 * p + 1] = bytes[c === 3 ? s + 1 : s];
      img.data[4 * p + 2] = bytes[c === 3 ? s + 2 : s];
      img.data[4 * p + 3] = 255;
    }
    const tmp = document.createElement("canvas");
    tmp.width = w;
    tmp.height = h;
    tmp.getContext("2d").putImageData(img, 0, 0);
    const size = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(w, Math.round(size.width * dpr));
    canvas.height = Math.max(h, Math.round(size.height * dpr));
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  }

  // ---- decoding the current point: one request in flight, the latest point wins ----------
  let wanted = null;
  let busy = false;
  let decodes = 0;

  function requestDecode() {
    wanted = state.z.slice();
    if (!busy) pump();
  }

  async function pump() {
    busy = true;
    document.body.dataset.busy = "1";
    while (wanted) {
      const z = wanted;
      wanted = null;
      const cls = state.cls;
      const strip = $("classes").children;
      const body = { z: [z] };
      if (cls !== null && strip.length) { // row 0 as the picked class, then row 1 + c as class c
        body.z = new Array(strip.length + 1).fill(z);
        body.label = [cls, ...Array.from(strip, (_, c) => c)];
      } else if (cls !== null) {
        body.label = cls;
      }
      try {
        const doc = await api("/api/decode", body);
        const canvas = $("decoded");
        const px = unpack(doc.images);
        paint(canvas, px, 0);
        for (let c = 1; c < px.n; c++) paint(strip[c - 1], px, c);
        canvas.dataset.z = z.join(",");
        canvas.dataset.label = cls === null ? "" : String(cls);
        decodes += 1;
        document.body.dataset.decodes = String(decodes);
        say("");
      } catch (err) {
        say(`decode failed: ${err.message}`);
      }
    }
    busy = false;
    document.body.dataset.busy = "0";
  }

  // ---- the current point -------------------------------------------------------------------
  const clampZ = (v) => Math.max(-state.info.limits.z, Math.min(state.info.limits.z, v));

  function setZ(z, from) {
    state.z = z.map((v) => Math.round(clampZ(v) * 1000) / 1000);
    for (const [d, s] of state.sliders) {
      if (s.input !== from) s.input.value = String(state.z[d]);
      s.output.textContent = fmt(state.z[d]);
    }
    drawPlane();
    readout();
    requestDecode();
  }

  const fmt = (v) => (v >= 0 ? "+" : "") + v.toFixed(2);

  function readout() {
    const info = state.info;
    const shown = info.dims.slice(0, 16);
    const lines = shown.map((d) => `z${d} = ${fmt(state.z[d])}`);
    if (info.latent_dim > shown.length) lines.push(`(+${info.latent_dim - shown.length} more dims)`);
    $("zread").textContent = lines.join("   ");
    const side = info.input_shape[1] > 1 ? Math.max(info.input_shape[1], info.input_shape[2])
      : Math.ceil(Math.sqrt(info.input_shape[2]));
    const scale = Math.max(1, Math.min(info.limits.scale, Math.floor(512 / side)));
    const cls = state.cls !== null ? `&label=${state.cls}` : "";
    $("save").href = `/api/image.png?z=${state.z.join(",")}&scale=${scale}${cls}`;
  }

  // ---- the plane ----------------------------------------------------------------------------
  function planeGeometry() {
    const canvas = $("plane");
    const css = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(css.width * dpr)) {
      canvas.width = Math.round(css.width * dpr);
      canvas.height = Math.round(css.height * dpr);
    }
    const s = canvas.width;
    return { canvas, dpr, s, toPx: (v) => ((v + R) / (2 * R)) * s, toZ: (p) => (p / s) * 2 * R - R };
  }

  function labelColour(label) {
    return PALETTE[((label % PALETTE.length) + PALETTE.length) % PALETTE.length];
  }

  function drawPlane() {
    const { canvas, dpr, s, toPx } = planeGeometry();
    const ctx = canvas.getContext("2d");
    const info = state.info;
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    ctx.fillStyle = dark ? "#0d1117" : "#fff";
    ctx.fillRect(0, 0, s, s);
    ctx.strokeStyle = dark ? "#30363d" : "#e6e8eb";
    ctx.lineWidth = dpr;
    for (let v = -R; v <= R; v++) {
      ctx.beginPath(); ctx.moveTo(toPx(v), 0); ctx.lineTo(toPx(v), s); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(0, s - toPx(v)); ctx.lineTo(s, s - toPx(v)); ctx.stroke();
    }
    ctx.setLineDash([4 * dpr, 4 * dpr]);
    ctx.strokeStyle = dark ? "#6e7681" : "#9aa0a6";
    for (const r of [1, 2]) {
      ctx.beginPath(); ctx.arc(toPx(0), s - toPx(0), (r / (2 * R)) * s, 0, 2 * Math.PI); ctx.stroke();
    }
    ctx.setLineDash([]);
    const dy = state.dy;
    for (let i = 0; i < info.points.length; i++) {
      const p = info.points[i];
      const label = info.labels ? info.labels[i] : null;
      const on = state.label === null || label === state.label;
      ctx.globalAlpha = on ? 0.75 : 0.12;
      ctx.fillStyle = label === null ? "#3b6fb6" : labelColour(label);
      ctx.beginPath();
      ctx.arc(toPx(p[state.dx]), s - toPx(dy === null ? 0 : p[dy]), 2.4 * dpr, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.globalAlpha = 1;
    const x = toPx(Math.max(-R, Math.min(R, state.z[state.dx])));
    const y = s - toPx(dy === null ? 0 : Math.max(-R, Math.min(R, state.z[dy])));
    ctx.beginPath(); ctx.arc(x, y, 8 * dpr, 0, 2 * Math.PI);
    ctx.fillStyle = "#111"; ctx.fill();
    ctx.lineWidth = 3 * dpr; ctx.strokeStyle = "#fff"; ctx.stroke();
    ctx.beginPath(); ctx.arc(x, y, 10 * dpr, 0, 2 * Math.PI);
    ctx.lineWidth = 1.5 * dpr; ctx.strokeStyle = "#111"; ctx.stroke();
    ctx.fillStyle = dark ? "#9198a1" : "#656d76";
    ctx.font = `${11 * dpr}px system-ui, sans-serif`;
    ctx.textAlign = "right";
    ctx.fillText(`z${state.dx}`, s - 6 * dpr, s - 6 * dpr);
    ctx.textAlign = "left";
    if (dy !== null) ctx.fillText(`z${dy}`, 6 * dpr, 14 * dpr);
  }

  function moveTo(ev) {
    const { canvas, dpr, toZ, s } = planeGeometry();
    const rect = canvas.getBoundingClientRect();
    const z = state.z.slice();
    z[state.dx] = toZ((ev.clientX - rect.left) * dpr);
    if (state.dy !== null) z[state.dy] = toZ(s - (ev.clientY - rect.top) * dpr);
    setZ(z);
  }

  function wirePlane() {
    const canvas = $("plane");
    canvas.addEventListener("pointerdown", (ev) => {
      state.dragging = true;
      canvas.setPointerCapture(ev.pointerId);
      moveTo(ev);
    });
    canvas.addEventListener("pointermove", (ev) => { if (state.dragging) moveTo(ev); });
    const stop = () => { state.dragging = false; };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("keydown", (ev) => {
      const step = ev.shiftKey ? 0.5 : 0.1;
      const z = state.z.slice();
      const keys = { ArrowLeft: [state.dx, -step], ArrowRight: [state.dx, step],
        ArrowUp: [state.dy, step], ArrowDown: [state.dy, -step] };
      const k = keys[ev.key];
      if (!k || k[0] === null) return;
      ev.preventDefault();
      z[k[0]] += k[1];
      setZ(z);
    });
    window.addEventListener("resize", drawPlane);
  }

  function fillDimSelect(select, chosen) {
    const info = state.info;
    select.innerHTML = "";
    info.dims.forEach((d, r) => {
      const opt = document.createElement("option");
      opt.value = String(d);
      opt.textContent = `z${d} (${info.score || "KL"} ${info.kl[r].toFixed(2)})`;
      select.appendChild(opt);
    });
    select.value = String(chosen);
  }

  // ---- sliders ------------------------------------------------------------------------------
  function buildSliders() {
    const info = state.info;
    const box = $("sliders");
    const maxKl = Math.max(1e-9, ...info.kl);
    info.sliders.forEach((d) => {
      const r = info.dims.indexOf(d);
      const row = document.createElement("div");
      row.className = "slider";
      const label = document.createElement("label");
      label.innerHTML = `z${d} <small>${info.score || "KL"} ${info.kl[r].toFixed(2)}</small>`;
      const bar = document.createElement("div");
      bar.className = "kl";
      bar.style.width = `${Math.round((100 * info.kl[r]) / maxKl)}%`;
      label.appendChild(bar);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: String(-R), max: String(R), step: "0.01", value: "0" });
      input.id = `slider-z${d}`;
      label.htmlFor = input.id;
      const output = document.createElement("output");
      output.textContent = fmt(0);
      input.addEventListener("input", () => {
        const z = state.z.slice();
        z[d] = Number(input.value);
        setZ(z, input);
      });
      row.append(label, input, output);
      box.appendChild(row);
      state.sliders.set(d, { input, output });
    });
  }

  // ---- labels ------------------------------------------------------------------------------
  function buildLabels() {
    const info = state.info;
    if (!info.labels) return;
    $("label-box").hidden = false;
    const select = $("label");
    const all = document.createElement("option");
    all.value = "";
    all.textContent = "all";
    select.appendChild(all);
    Object.keys(info.centroids).forEach((v) => {
      const opt = document.createElement("option");
      opt.value = v;
      const name = info.classes && info.classes[Number(v)] !== undefined ? info.classes[Number(v)] : v;
      opt.textContent = name;
      select.appendChild(opt);
    });
    const legend = $("legend");
    Object.keys(info.centroids).forEach((v) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.label = v;
      const dot = document.createElement("i");
      dot.style.background = labelColour(Number(v)); // CSSOM, which the page's CSP allows
      chip.append(dot, select.querySelector(`option[value="${v}"]`).textContent);
      chip.title = "show only this label; click again for all";
      chip.addEventListener("click", () => {
        select.value = select.value === v ? "" : v;
        select.dispatchEvent(new Event("change"));
      });
      legend.appendChild(chip);
    });
    select.addEventListener("change", () => {
      state.label = select.value === "" ? null : Number(select.value);
      for (const chip of legend.children) chip.classList.toggle("on", chip.dataset.label === select.value);
      if (state.label !== null && state.cls !== null) pickClass(state.label, info.centroids[select.value]);
      else if (state.label !== null) setZ(info.centroids[select.value]);
      else drawPlane();
      $("gallery").innerHTML = "";
      state.pageOffset = 0;
      loadExamples();
    });
  }

  // ---- a conditional run's class: the picker, and the point decoded as every class --------
  function className(c) {
    const names = state.info.classes;
    return names && names[c] !== undefined ? String(names[c]) : String(c);
  }

  function buildClasses() {
    const info = state.info;
    if (info.decode_label === null) return;
    state.cls = info.decode_label;
    $("class-box").hidden = false;
    const select = $("decode-class");
    for (let c = 0; c < info.n_classes; c++) {
      const opt = document.createElement("option");
      opt.value = String(c);
      opt.textContent = className(c);
      select.appendChild(opt);
    }
    select.value = String(state.cls);
    select.addEventListener("change", () => pickClass(Number(select.value)));
    if (info.n_classes > MAX_STRIP || info.n_classes + 1 > info.limits.vectors) return;
    const strip = $("classes");
    $("classes-box").hidden = false;
    for (let c = 0; c < info.n_classes; c++) {
      const tile = document.createElement("canvas");
      tile.dataset.label = String(c);
      tile.title = `decode as ${className(c)}`;
      tile.addEventListener("click", () => pickClass(c));
      strip.appendChild(tile);
    }
    markClass();
  }

  function markClass() {
    $("decode-class").value = String(state.cls);
    for (const t of $("classes").children) t.classList.toggle("on", Number(t.dataset.label) === state.cls);
  }

  // decode as class c from now on (at point z, else where the point is)
  function pickClass(c, z) {
    state.cls = c;
    markClass();
    setZ(z || state.z);
  }

  // ---- examples and interpolation ------------------------------------------------------------
  async function loadExamples() {
    const q = new URLSearchParams({ offset: String(state.pageOffset), limit: "48" });
    if (state.label !== null) q.set("label", String(state.label));
    try {
      const doc = await api(`/api/examples?${q}`);
      const px = doc.images ? unpack(doc.images) : null;
      doc.index.forEach((idx, i) => {
        const c = document.createElement("canvas");
        c.className = "thumb";
        c.dataset.index = String(idx);
        c.title = `held-out #${idx}` + (doc.labels ? `, label ${doc.labels[i]}` : "");
        $("gallery").appendChild(c);
        paint(c, px, i);
        c.addEventListener("click", () => pick(idx, doc.z[i], px, i));
      });
      state.pageOffset = doc.offset + doc.index.length;
      $("more").disabled = state.pageOffset >= doc.total;
    } catch (err) {
      say(`could not load examples: ${err.message}`);
    }
  }

  function pick(index, z, px, i) {
    const slot = state.next;
    state.picks[slot] = { index, z };
    state.next = slot === "a" ? "b" : "a";
    paint($(`pick-${slot}`), px, i);
    $(`goto-${slot}`).disabled = false;
    for (const c of $("gallery").children) {
      c.classList.toggle("is-a", state.picks.a !== null && Number(c.dataset.index) === state.picks.a.index);
      c.classList.toggle("is-b", state.picks.b !== null && Number(c.dataset.index) === state.picks.b.index);
    }
    interpolate();
  }

  async function interpolate() {
    const { a, b } = state.picks;
    if (!a || !b) return;
    try {
      const doc = await api("/api/interpolate", {
        a: a.index, b: b.index, steps: Number($("steps").value), method: $("method").value,
      });
      const strip = $("strip");
      strip.innerHTML = "";
      const px = unpack(doc.images);
      doc.z.forEach((z, i) => {
        const c = document.createElement("canvas");
        strip.appendChild(c);
        paint(c, px, i);
        c.title = "move the point here";
        c.addEventListener("click", () => setZ(z));
      });
    } catch (err) {
      say(`interpolation failed: ${err.message}`);
    }
  }

  // ---- start ---------------------------------------------------------------------------------
  async function start() {
    let info;
    try {
      info = await api("/api/info");
    } catch (err) {
      say(`cannot reach the explorer server: ${err.message}`);
      return;
    }
    state.info = info;
    state.z = new Array(info.latent_dim).fill(0);
    state.dx = info.dims[0];
    state.dy = info.latent_dim > 1 ? info.dims[1] : null;
    $("run").textContent = info.run;
    document.title = `vaelab explore: ${info.run}`;
    $("meta").textContent = `${info.latent_dim}-d latent · ${info.likelihood} decoder · input `
      + `${info.input_shape.join("x")} · ${info.n_examples} held-out examples`;
    fillDimSelect($("dim-x"), state.dx);
    if (state.dy === null) $("dim-y").disabled = true; else fillDimSelect($("dim-y"), state.dy);
    $("dim-x").addEventListener("change", (ev) => { state.dx = Number(ev.target.value); drawPlane(); });
    $("dim-y").addEventListener("change", (ev) => { state.dy = Number(ev.target.value); drawPlane(); });
    buildSliders();
    buildLabels();
    buildClasses();
    wirePlane();
    $("origin").addEventListener("click", () => setZ(new Array(info.latent_dim).fill(0)));
    $("random").addEventListener("click", () => setZ(state.z.map(() => gaussian())));
    $("goto-a").addEventListener("click", () => state.picks.a && setZ(state.picks.a.z));
    $("goto-b").addEventListener("click", () => state.picks.b && setZ(state.picks.b.z));
    $("method").addEventListener("change", interpolate);
    $("steps").addEventListener("input", () => { $("steps-out").textContent = $("steps").value; });
    $("steps").addEventListener("change", interpolate);
    $("more").addEventListener("click", loadExamples);
    setZ(state.z);
    await loadExamples();
    document.body.dataset.ready = "1";
  }

  function gaussian() { // Box-Muller: one N(0, 1) draw
    const u = 1 - Math.random();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * Math.random());
  }

  document.addEventListener("DOMContentLoaded", start);
})();
