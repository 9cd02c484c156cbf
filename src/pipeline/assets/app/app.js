// The page of `python -m pipeline.app` (served from the package as /assets/app.js).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { files: [], tool: "brush", painting: false, last: null, w: 0, h: 0, edited: false, hints: [],
                token: "", seq: 0, inflight: 0, ready: true, scale: 1, result: null, prefix: "", detectWhy: "" };
const maskCanvas = document.createElement("canvas");  // full resolution; opaque white = damaged
const WAITING = "Finishing the previous photo…", WARMING = "Preparing the models (first photo only)…";
const SMALL = 512;  // photos narrower than this are shown enlarged, with crisp pixels

function setState(s, message, error) {
  document.body.dataset.state = s;
  $("status").textContent = message || "";
  $("status").className = error ? "error" : "";
  $("progress").className = (s === "detecting" || s === "restoring") ? "on" : "";
  $("restore").disabled = !state.files.length || s === "detecting" || s === "restoring";
}

function sentence(text) {  // one line that ends with a period
  const t = String(text).split("\n")[0].trim();
  return /[.!?…]$/.test(t) ? t : t + ".";
}

function newToken() {  // each photo (and each restore) gets one; an answer carrying another is stale
  state.seq += 1; state.token = Date.now().toString(36) + "-" + state.seq;
  return state.token;
}
const current = (token) => token === state.token;

async function post(url, form) {
  const res = await fetch(url, { method: "POST", body: form });
  if (!res.ok) {
    let detail = res.status + " " + res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) {}
    throw new Error(detail);
  }
  return res;
}

async function call(url, form, token) {  // a request tied to its photo: its token, and a progress line meanwhile
  form.append("token", token);
  state.inflight += 1;
  const poll = setInterval(() => progress(token), 700);
  try { return await post(url, form); } finally { clearInterval(poll); state.inflight -= 1; }
}

const started = {};
async function progress(token) {  // the server's line for this request's stage, with the seconds so far
  if (!current(token) || !["detecting", "restoring"].includes(document.body.dataset.state)) return;
  try {
    const p = await (await fetch("api/progress/" + encodeURIComponent(token))).json();
    if (p.ready && !state.ready) watchWarmUp(p);
    if (!current(token) || !p.stage || p.stage === "Done.") return;
    started[token] = started[token] || Date.now();
    const s = Math.round((Date.now() - started[token]) / 1000);
    $("status").textContent = state.prefix + p.stage + (s >= 2 ? ` (${s} s)` : "");
  } catch (e) {}
}

function loadImage(src) {
  return new Promise((ok, fail) => { const im = new Image(); im.onload = () => ok(im); im.onerror = fail; im.src = src; });
}

function renderOverlay() {
  const o = $("overlay"), ctx = o.getContext("2d");
  ctx.clearRect(0, 0, o.width, o.height);
  ctx.globalAlpha = 0.55; ctx.drawImage(combinedMask(), 0, 0);  // painted or found, and clicked (select.js)
  ctx.globalCompositeOperation = "source-in"; ctx.globalAlpha = 1;
  ctx.fillStyle = "#ff2a2a"; ctx.fillRect(0, 0, o.width, o.height);
  ctx.globalCompositeOperation = "source-over";
  const r = Math.max(4, state.w / 80);
  for (const [x, y, c] of state.hints) {  // the placed colours: a dot of each, ringed to show on any photo
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fillStyle = c; ctx.fill();
    ctx.lineWidth = r / 3; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
  drawClicks(ctx);
}

const colourChoice = () => document.querySelector("input[name=colour]:checked").value;

function addOptions(form) {  // the choices every restore sends
  // the colour strength only when moved: the checkpoint's own (and its strength with hints) otherwise
  if ($("saturation").value !== state.saturation) form.append("saturation", $("saturation").value);
  form.append("colour", colourChoice()); form.append("preset", $("preset").value);
  form.append("normalise", $("normalise").checked ? "true" : "false"); addRefs(form);
}

function maskFraction() {
  const d = combinedMask().getContext("2d").getImageData(0, 0, state.w, state.h).data;
  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 127) n++;
  return n / (state.w * state.h);
}

async function setMaskFromPng(blob, canvas = maskCanvas) {  // L image (or its URL), 255 = damaged -> opaque white on transparent
  const im = await loadImage(typeof blob === "string" ? blob : URL.createObjectURL(blob));
  const tmp = document.createElement("canvas"); tmp.width = im.width; tmp.height = im.height;
  const t = tmp.getContext("2d"); t.drawImage(im, 0, 0);
  const data = t.getImageData(0, 0, im.width, im.height);
  for (let i = 0; i < data.data.length; i += 4) { const v = data.data[i]; data.data[i] = data.data[i + 1] = data.data[i + 2] = 255; data.data[i + 3] = v > 127 ? 255 : 0; }
  const m = canvas.getContext("2d"); m.clearRect(0, 0, canvas.width, canvas.height); m.putImageData(data, 0, 0);
  renderOverlay();
}

function maskBlob() {  // black with white damage, the API's mask format
  const c = document.createElement("canvas"); c.width = state.w; c.height = state.h;
  const ctx = c.getContext("2d"); ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height); ctx.drawImage(combinedMask(), 0, 0);
  return new Promise((ok) => c.toBlob(ok, "image/png"));
}

function displayScale(w, h) {  // a small photo shown enlarged by a whole factor (crisp pixels), to paint and click
  if (w >= SMALL) return 1;
  const room = Math.max(w, Math.min(($("editor").clientWidth || 800) - 30, 800));
  return Math.max(1, Math.min(Math.floor(room / w), Math.floor(Math.max(h, 0.75 * window.innerHeight) / h)));
}

function sizeEditor(w, h) {  // canvases at the photo's size, shown at state.scale times it
  state.w = w; state.h = h;
  for (const c of [$("photo"), $("overlay"), maskCanvas]) { c.width = w; c.height = h; }
  if (selCanvas.width !== w || selCanvas.height !== h) resetSelection();  // the same photo again keeps its clicks
  $("editor").classList.remove("hidden");
  state.scale = displayScale(w, h);
  $("photo").style.width = state.scale > 1 ? w * state.scale + "px" : "";
  for (const el of [$("editor"), $("output")]) el.classList.toggle("pixelated", state.scale > 1);
}

async function showPhoto(file, token) {  // the preview at once: the browser's own decoding, or the server's (TIFF)
  let im, w, h;
  try { im = await loadImage(URL.createObjectURL(file)); w = im.naturalWidth; h = im.naturalHeight; }
  catch (e) {
    try {
      const form = new FormData(); form.append("image", file);
      const res = await post("api/preview", form);
      [w, h] = res.headers.get("X-Image-Size").split("x").map(Number);
      im = await loadImage(URL.createObjectURL(await res.blob()));
    } catch (e2) { return false; }  // not a photo: detection says why
  }
  if (!current(token)) return false;
  sizeEditor(w, h);
  $("photo").getContext("2d").drawImage(im, 0, 0, w, h);
  renderOverlay();
  return true;
}

function busyLine(action) {
  if (state.inflight > 0) return `${WAITING} Then ${action}.`;
  return state.ready ? action[0].toUpperCase() + action.slice(1) + "…" : WARMING;
}

async function detect() {
  const file = state.files[0], token = newToken();
  setState("detecting", busyLine("looking for damage in " + file.name));
  const shown = await showPhoto(file, token);
  if (!current(token)) return;
  const form = new FormData(); form.append("image", file); form.append("damage", $("damage").value);
  try {
    const res = await call("api/detect", form, token);
    if (!current(token) || res.headers.get("X-Token") !== token) return;  // another photo was chosen meanwhile
    state.detectWhy = decodeURIComponent(res.headers.get("X-Explain") || ""); showWhy();
    const blob = await res.blob();
    const im = await loadImage(URL.createObjectURL(blob));
    if (!current(token)) return;
    if (!shown || im.width !== state.w || im.height !== state.h) {  // the browser could not show it: gray
      sizeEditor(im.width, im.height);
      const ctx = $("photo").getContext("2d"); ctx.fillStyle = "#888"; ctx.fillRect(0, 0, state.w, state.h);
    }
    await setMaskFromPng(blob);
    state.edited = false;
    const f = maskFraction();
    setState("ready", f > 0 ? `Damage found: ${(100 * f).toFixed(1)} % of the photo (red). Paint or erase, then Restore.`
                            : "No damage found. Paint over any you see, or Restore to add colour only.");
  } catch (e) {  // no dead end: nothing to restore until another photo is chosen
    if (!current(token)) return;
    state.files = []; $("editor").classList.add("hidden");
    const what = /choose|start the app/i.test(e.message) ? "" : " Choose another photo.";
    setState("error", "Could not read " + file.name + ": " + sentence(e.message) + what, true);
  }
}

function paintAt(ev) {
  const o = $("overlay"), r = o.getBoundingClientRect();
  const x = (ev.clientX - r.left) * state.w / r.width, y = (ev.clientY - r.top) * state.h / r.height;
  if (state.tool === "hint") {
    state.hints.push([x, y, $("hint-colour").value]); state.painting = false; renderOverlay();
    $("status").textContent = `${state.hints.length} colour(s) placed. Restore to use them.`;
    return;
  }
  if (state.tool === "select-crack") { state.painting = false; selectAt(x, y); return; }
  state.edited = true;
  const erase = state.tool === "eraser";
  if (erase && sel.points.length) sel.erased = true;  // the selection as erased goes with the mask, not the clicks
  for (const c of erase ? [maskCanvas, selCanvas] : [maskCanvas]) {
    const ctx = c.getContext("2d");
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.strokeStyle = ctx.fillStyle = "#fff"; ctx.lineCap = "round";
    ctx.lineWidth = Number($("size").value) * state.w / r.width;
    ctx.beginPath(); const p = state.last || { x, y }; ctx.moveTo(p.x, p.y); ctx.lineTo(x, y); ctx.stroke();
    ctx.globalCompositeOperation = "source-over";
  }
  state.last = { x, y }; renderOverlay();
}

function addRefs(form) {  // a verified reference gives the hole's content and the colour
  for (const f of $("refs").files) form.append("references", f, f.name);
}

function reportLines(r) {  // the restore's report (pipeline.policy.Report) in a person's words
  if (!r) return [];
  const found = state.edited ? "as you painted it" : "found by the detector";
  const damage = r.damage === "points" ? "where you clicked, and " + found : r.damage !== "given" ? r.damage : found;
  const why = [r.damage !== "given" && `${r.damage}: ${r.damage_why}`,  // the mask the page sent: what the detector said
               r.damage_why.endsWith("given mask") && !state.edited && state.detectWhy && "the detector's " + state.detectWhy];
  const lines = [r.preset === "photo" ? "Restored for a person looking at it (the photo preset)."
                                      : `Restored for the competition's score (its preset): ${r.preset_why}.`,
                 `Damage: ${damage}, ${(100 * r.damage_share).toFixed(1)} % of the photo.`, `Colour: ${r.colour}.`];
  if (why.some(Boolean)) lines.splice(2, 0, "Why: " + sentence(why.filter(Boolean).join("; ")));  // which rule decided, and why
  if (r.reference) lines.push(r.reference.name ? `Reference ${r.reference.name} matched, covering ${Math.round(100 * r.reference.coverage)} % of the photo.`
                                               : "No reference matched: the colour and the holes are the model's own guess.");
  return lines;
}

function showResult(url, stem) {  // the result shown after the slider and offered for download
  $("after").src = url;
  Object.assign($("download"), { href: url, download: stem + "_restored.png" });
}

function pick(which) {  // a toned print: the person's pick of its own tone or the colourised one
  const out = state.result;
  showResult(which === "colour" ? out.colourised : out.image, out.stem + (which === "colour" ? "_colourised" : ""));
  $("pick-tone").classList.toggle("picked", which !== "colour"); $("pick-colour").classList.toggle("picked", which === "colour");
}

async function restoreOne() {
  const file = state.files[0], token = newToken();
  setState("restoring", busyLine("restoring " + file.name));
  const form = new FormData();
  form.append("image", file); form.append("mask", await maskBlob(), "mask.png"); addOptions(form);
  if (sel.points.length && !sel.erased) {  // the clicks, so that the report says what they selected
    form.append("points", JSON.stringify(sel.points)); form.append("sensitivity", $("sensitivity").value);
  }
  if (state.hints.length) form.append("hints", JSON.stringify(state.hints.map(([x, y, c]) => [Math.round(x), Math.round(y), c])));
  try {
    const out = await (await call("api/restore/full", form, token)).json();
    if (!current(token) || out.token !== token) return;  // another photo was chosen meanwhile
    out.stem = file.name.replace(/\.[^.]+$/, ""); state.result = out;
    $("gray").src = out.gray; $("before").src = $("photo").toDataURL("image/png");
    showResult(out.image, out.stem);
    Object.assign($("download-mask"), { href: out.mask, download: out.stem + "_mask.png" });
    $("download").classList.remove("disabled"); $("download-mask").classList.remove("disabled");
    $("report").replaceChildren(...reportLines(out.report).map((t) => Object.assign(document.createElement("li"), { textContent: t })));
    $("choice").classList.toggle("hidden", !out.colourised);
    if (out.colourised) { $("pick-tone").querySelector("img").src = out.image; $("pick-colour").querySelector("img").src = out.colourised; pick("tone"); }
    $("output").classList.remove("hidden");
    $("output").scrollIntoView({ block: "start" });  // a tall photo's result starts below the window
    const preset = out.report ? ` with the ${out.report.preset} preset` : "";
    setState("done", `Restored${preset} (${(100 * out.damaged_fraction).toFixed(1)} % repaired). ` +
      (out.colourised ? "A toned print: its own tone and a colourised one are side by side below; pick one." : "Drag the slider to compare."));
  } catch (e) { if (current(token)) setState("error", "Restore failed: " + sentence(e.message) + " Try again, or choose another photo.", true); }
}

function uniqueNames(names) {  // as the server's zip names them: same.png, same-2.png (case aside)
  const taken = new Set();
  return names.map((n) => {
    const dot = n.lastIndexOf("."), stem = dot > 0 ? n.slice(0, dot) : n, ext = dot > 0 ? n.slice(dot) : "";
    let c = n; for (let k = 2; taken.has(c.toLowerCase()); k++) c = `${stem}-${k}${ext}`;
    taken.add(c.toLowerCase()); return c;
  });
}

function thumb(box, cls) { const div = document.createElement("div"); div.className = cls; box.appendChild(div); return div; }

async function restoreMany() {
  const files = state.files, out = [], box = $("results"), token = newToken();
  const names = uniqueNames(files.map((f) => f.name.replace(/\.[^.]+$/, "") + "_restored.png"));
  box.innerHTML = ""; box.classList.remove("hidden"); $("progress").max = files.length;
  setState("restoring", busyLine(`restoring 0/${files.length}`));
  for (let i = 0; i < files.length; i++) {
    const form = new FormData(); form.append("image", files[i]);
    form.append("damage", $("damage").value); addOptions(form);
    state.prefix = `Photo ${i + 1}/${files.length}: `;
    try {
      const blob = await (await call("api/restore", form, token)).blob();
      if (!current(token)) return;
      out.push({ name: names[i], blob });
      const div = thumb(box, "thumb"), url = URL.createObjectURL(blob);
      div.innerHTML = `<img alt=""><a class="button" download>Download</a><div></div>`;
      div.querySelector("img").src = url; div.querySelector("img").alt = names[i]; div.querySelector("div").textContent = names[i];
      Object.assign(div.querySelector("a"), { href: url, download: names[i] });
    } catch (e) {
      if (!current(token)) return;
      thumb(box, "thumb error").textContent = files[i].name + ": " + sentence(e.message);
    }
    $("progress").value = i + 1; $("status").textContent = `Restoring ${i + 1}/${files.length}…`;
  }
  state.prefix = "";
  if (out.length) {  // one zip, built by the server (Python's zipfile: UTF-8 names, no two alike)
    const form = new FormData(); for (const f of out) form.append("files", f.blob, f.name);
    try { $("zip").href = URL.createObjectURL(await (await post("api/zip", form)).blob()); $("zip").classList.remove("disabled"); }
    catch (e) { if (current(token)) return setState("error", "Could not build the zip: " + sentence(e.message) + " Download the photos one by one.", true); }
  }
  if (!current(token)) return;
  setState("done", `Restored ${out.length} of ${files.length} photos. Download each, or all in one zip.`);
  $("progress").removeAttribute("max");
}

function showChosen(files) {  // thumbnails of the chosen photos (a TIFF: its name)
  const box = $("chosen"); box.innerHTML = "";
  if (files.length < 2) return;
  for (const f of files) {
    const fig = document.createElement("figure"), im = document.createElement("img"), cap = document.createElement("figcaption");
    im.alt = f.name; im.src = URL.createObjectURL(f); cap.textContent = f.name; fig.title = f.name;
    fig.append(im, cap); box.appendChild(fig);
  }
}

function chooseFiles(list) {
  state.files = Array.from(list); if (!state.files.length) return;
  newToken();  // whatever is still running belongs to the photos chosen before
  state.hints = []; state.result = null; state.prefix = ""; state.detectWhy = ""; resetSelection();
  for (const id of ["download", "download-mask", "zip"]) $(id).classList.add("disabled");
  $("output").classList.add("hidden"); $("results").classList.add("hidden"); $("choice").classList.add("hidden");
  const many = state.files.length > 1;
  showChosen(state.files);
  $("zip").classList.toggle("hidden", !many); $("editor").classList.toggle("hidden", many);
  for (const id of ["download", "download-mask"]) $(id).classList.toggle("hidden", many);  // batch: one per photo
  if (many) setState("ready", `${state.files.length} photos: the damage is detected in each. Press Restore.`);
  else detect();
}

function watchWarmUp(info) {  // the models warm up once at server start: say so until they are ready
  state.ready = info.ready !== false;
  $("warm").classList.toggle("hidden", state.ready);
  if (!state.ready) setTimeout(() => fetch("api/info").then((r) => r.json()).then(watchWarmUp).catch(() => {}), 500);
}

$("drop").onclick = () => $("file").click();
$("drop").onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } };
$("file").onchange = (e) => { chooseFiles(e.target.files); e.target.value = ""; };  // the same photo again: a change too
$("drop").ondragover = (e) => { e.preventDefault(); $("drop").classList.add("over"); };
$("drop").ondragleave = () => $("drop").classList.remove("over");
$("drop").ondrop = (e) => { e.preventDefault(); $("drop").classList.remove("over"); chooseFiles(e.dataTransfer.files); };
const TOOLS = ["brush", "eraser", "select-crack", "hint"];
for (const t of TOOLS) $(t).onclick = () => { state.tool = t; for (const u of TOOLS) $(u).classList.toggle("active", t === u); };
$("clear-hints").onclick = () => { state.hints = []; renderOverlay(); };
$("clear").onclick = () => { maskCanvas.getContext("2d").clearRect(0, 0, state.w, state.h); state.edited = true; resetSelection(); renderOverlay(); $("status").textContent = "Mask cleared: Restore adds colour only."; };
$("redetect").onclick = () => state.files.length === 1 && detect();
$("damage").onchange = () => {  // a mask the person painted is theirs: kept until they ask to detect again
  if (state.files.length !== 1) return;
  if (state.edited) $("status").textContent = "Your painted mask is kept. Press Detect to look again for this kind of damage.";
  else detect();
};
for (const b of document.querySelectorAll("[data-pick]")) b.onclick = () => pick(b.dataset.pick);
$("size").oninput = () => $("size-value").textContent = $("size").value;
$("saturation").oninput = () => $("saturation-value").textContent = Number($("saturation").value).toFixed(2);
$("split").oninput = () => document.querySelector(".compare .before").style.clipPath = `inset(0 ${100 - $("split").value}% 0 0)`;
$("overlay").onpointerdown = (e) => { state.painting = true; state.last = null; $("overlay").setPointerCapture(e.pointerId); paintAt(e); };
$("overlay").onpointermove = (e) => { if (state.painting) paintAt(e); };
$("overlay").onpointerup = () => { state.painting = false; state.last = null; };
$("after").onload = () => {  // shown as large as the photo in the editor (a small one enlarged)
  const w = $("after").naturalWidth;
  $("after").style.width = state.scale > 1 && w === state.w ? w * state.scale + "px" : "";
};
$("restore").onclick = () => state.files.length > 1 ? restoreMany() : restoreOne();
fetch("api/info").then((r) => r.json()).then((info) => {
  $("saturation").value = info.saturation; $("saturation").oninput(); state.saturation = $("saturation").value;
  $("damage").value = info.damage_kinds.includes(info.damage) ? info.damage : "auto";
  if (info.preset) $("preset").value = info.preset;
  if (info.sensitivity !== undefined) { $("sensitivity").value = info.sensitivity; $("sensitivity").oninput(); }
  watchWarmUp(info);
});
