// "Select a crack" (served as /assets/select.js, after app.js): a click on the photo selects the damage it
// lies on (/api/select: the run of likely damage from the click, or the thin line traced in the image); the
// sensitivity slider runs the clicks so far again at another threshold; Undo takes back the last click.
"use strict";
const selCanvas = document.createElement("canvas");  // the clicks' selection, full resolution; opaque white = damaged
const sel = { points: [], seq: 0, why: "", erased: false, share: 0, clicked: false };

function resetSelection() {  // a new photo (or Clear): no clicks
  sel.points = []; sel.why = ""; sel.erased = false; sel.share = 0; sel.seq += 1;
  selCanvas.width = state.w; selCanvas.height = state.h;
  showWhy(); $("undo-click").disabled = true;
}

function combinedMask() {  // what is painted or found, and what the clicks select: opaque white = damaged
  const c = document.createElement("canvas"); c.width = state.w; c.height = state.h;
  const ctx = c.getContext("2d"); ctx.drawImage(maskCanvas, 0, 0);
  if (selCanvas.width === state.w && selCanvas.height === state.h) ctx.drawImage(selCanvas, 0, 0);
  return c;
}

function drawClicks(ctx) {  // each click: a small yellow ring, so that Undo's effect is seen
  const r = Math.max(3, state.w / 160);
  ctx.lineWidth = Math.max(1, r / 2.5); ctx.strokeStyle = "#ffd400";
  for (const [x, y] of sel.points) { ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke(); }
}

function showWhy() {  // the latest explain line: which rule decided the damage, and why
  const text = sel.points.length ? sel.why : state.detectWhy;
  $("why").textContent = text ? "Why: " + sentence(text) : "";
}

function selectAt(x, y) {
  if (state.files.length !== 1) return;
  sel.points.push([Math.min(state.w - 1, Math.max(0, Math.round(x))), Math.min(state.h - 1, Math.max(0, Math.round(y)))]);
  sel.clicked = true; runSelection();
}

async function runSelection() {  // the clicks so far, at the slider's sensitivity
  const seq = ++sel.seq, token = state.token, n = sel.points.length, clicked = sel.clicked;
  sel.clicked = false;
  $("undo-click").disabled = !n;
  if (!n) {
    selCanvas.getContext("2d").clearRect(0, 0, selCanvas.width, selCanvas.height);
    sel.why = ""; sel.erased = false; sel.share = 0; renderOverlay(); showWhy(); return;
  }
  const form = new FormData();
  form.append("image", state.files[0]); form.append("points", JSON.stringify(sel.points));
  form.append("sensitivity", $("sensitivity").value); form.append("token", token);
  document.body.dataset.selecting = "1";
  $("status").textContent = `Selecting the damage under ${n} click${n > 1 ? "s" : ""}…`;
  renderOverlay();
  try {
    const out = await (await post("api/select", form)).json();
    if (seq !== sel.seq || !current(token)) return;  // another click, slider move or photo came meanwhile
    await setMaskFromPng(out.mask, selCanvas);
    const little = clicked && (out.share - sel.share) * state.w * state.h < 40;  // a few pixels: nothing like a crack
    sel.why = out.why; sel.erased = false; sel.share = out.share; showWhy();
    $("status").textContent = `${n} click${n > 1 ? "s" : ""}: ${(100 * out.share).toFixed(1)} % of the photo selected (red). ` +
      (little ? "That click found little: try the sensitivity slider lower or higher, or paint it with the brush."
              : "The sensitivity slider shows more or less of it; Undo takes back the last click.");
  } catch (e) {
    if (seq === sel.seq && current(token)) setState("ready", "Could not select: " + sentence(e.message), true);
  } finally { if (seq === sel.seq) delete document.body.dataset.selecting; }
}

$("undo-click").onclick = () => { sel.points.pop(); runSelection(); };
$("sensitivity").oninput = () => $("sensitivity-value").textContent = Number($("sensitivity").value).toFixed(2);
$("sensitivity").onchange = () => { if (sel.points.length) runSelection(); };
$("sensitivity").oninput();
