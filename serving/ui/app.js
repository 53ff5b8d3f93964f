// The /ui page: draw or drop an image, send it as raw pixels to /classify,
// /cluster and /reconstruct, show the answers. Plain browser JavaScript, no
// libraries. The run's size, channels, pixel range and class names come from
// /ui/config.json; pixels.js (loaded first) scales an image of any size to the
// run's size (area average), converts it to its channels and maps 0-255 to
// 0..pixel_max, exactly like the service's PNG routes do.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "softvq-api-key";
const API = new URL("../", window.location.href); // the service root, whatever the mount

let info = null;          // /ui/config.json
let drawing = false;
let dirty = false;        // the pad holds something worth sending
let inFlight = false;
let queued = false;
let lastPoint = null;

// ---- errors -------------------------------------------------------------------------
function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}
function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// ---- API calls with the optional key ------------------------------------------------
let keyPrompt = null;     // the open key dialog, shared by concurrent calls

// Ask the person for the API key (one dialog, however many calls need it).
function askForKey(message) {
  if (!keyPrompt) {
    keyPrompt = promptForKey(message).finally(() => { keyPrompt = null; });
  }
  return keyPrompt;
}

function promptForKey(message) {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-message").textContent = message || "This service asks for an API key.";
    $("apikey").value = "";
    const done = (key) => {
      $("key-form").onsubmit = null;
      $("apikey-cancel").onclick = null;
      if (dialog.open) dialog.close();
      resolve(key);
    };
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      done($("apikey").value.trim() || null);
    };
    $("apikey-cancel").onclick = () => done(null);
    dialog.showModal();
    $("apikey").focus();
  });
}

// GET `path` (no body), or POST `body`: a FormData as multipart, anything else as JSON.
async function call(path, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers["Authorization"] = "Bearer " + key;
    let init = { method: "GET", headers };
    if (body instanceof FormData) {
      init = { method: "POST", headers, body };  // the browser sets the boundary
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init = { method: "POST", headers, body: JSON.stringify(body) };
    }
    let response;
    try {
      response = await fetch(new URL(path, API), init);
    } catch (error) {
      throw new Error("Cannot reach the service (" + error.message + "). Is it still running?");
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    if (response.status === 401) {
      const reason = (payload && payload.error) || "The service needs an API key.";
      if (sessionStorage.getItem(KEY) !== key) continue;  // another call got a new key meanwhile
      const entered = await askForKey(key ? "That key was refused: " + reason : reason);
      if (!entered) throw new Error("Not sent: " + reason);
      sessionStorage.setItem(KEY, entered);
      continue;
    }
    if (!response.ok) {
      const message = (payload && payload.error) || "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return payload;
  }
  throw new Error("The API key was refused three times.");
}

// ---- answers --------------------------------------------------------------------------
function showProbabilities(probabilities) {
  const names = info.class_names;
  const best = probabilities.indexOf(Math.max(...probabilities));
  const bars = $("probabilities");
  bars.replaceChildren(...probabilities.map((p, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === best ? " best" : "");
    row.dataset.label = String(i);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = names[i];
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * p).toFixed(1) + "%";
    fill.style.display = "block";
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * p).toFixed(1) + " %";
    row.append(name, track, pct);
    return row;
  }));
  return best;
}

async function predict() {
  if (!info) return;
  if (inFlight) { queued = true; return; }
  inFlight = true;
  document.body.dataset.busy = "true";  // "false" once every answer is shown (for tests)
  const raw = toRaw(modelPixels($("pad"), info), info);
  paint($("model-input"), raw, info);
  const body = { images: [raw] };
  try {
    const [classes, clusters, decoded] = await Promise.all([
      info.labelled ? call("classify", body) : Promise.resolve(null),
      call("cluster", body),
      info.reconstruct ? call("reconstruct", body) : Promise.resolve(null),
    ]);
    clearError();
    if (classes) {
      const best = showProbabilities(classes.probabilities[0]);
      const name = (classes.names && classes.names[0]) || info.class_names[best];
      $("prediction").textContent = name;
      $("prediction").dataset.state = "ready";
      $("prediction").dataset.label = String(classes.labels[0]);
      $("confidence").textContent = (100 * classes.probabilities[0][best]).toFixed(1) + " % sure";
    }
    const c = clusters.clusters[0];
    const matched = clusters.labels && info.class_names ? info.class_names[clusters.labels[0]] : null;
    $("cluster").innerHTML = "";
    const strong = document.createElement("b");
    strong.textContent = "#" + c;
    $("cluster").append(strong, document.createTextNode(
      " · distance " + clusters.distances[0].toFixed(3) + (matched !== null ? " · matched class " + matched : "")));
    $("cluster").dataset.cluster = String(c);
    if (decoded) {
      paint($("reconstruction"), decoded.images[0], info);
      $("reconstruction").dataset.state = "ready";
    }
  } catch (error) {
    showError(error.message);
  } finally {
    inFlight = false;
    if (queued) { queued = false; predict(); } else { document.body.dataset.busy = "false"; }
  }
}

function resetAnswers() {
  $("prediction").textContent = "–";
  $("prediction").dataset.state = "empty";
  $("confidence").textContent = "";
  $("cluster").textContent = "–";
  $("probabilities").replaceChildren();
  const r = $("reconstruction");
  r.getContext("2d", READBACK).clearRect(0, 0, r.width, r.height);
  r.dataset.state = "empty";
  $("model-input").getContext("2d", READBACK).clearRect(0, 0, r.width, r.height);
}

// ---- drawing --------------------------------------------------------------------------
function clearPad() {
  const pad = $("pad");
  const ctx = pad.getContext("2d", READBACK);
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  dirty = false;
  $("file-note").textContent = "";
  resetAnswers();
}

function padPoint(event) {
  const pad = $("pad");
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
          (event.clientY - box.top) * pad.height / box.height];
}

function stroke(from, to) {
  const pad = $("pad");
  const ctx = pad.getContext("2d", READBACK);
  // About one run pixel wide, like the strokes of the training digits.
  ctx.lineWidth = Math.max(pad.width * 0.08, 1.15 * pad.width / info.width);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#fff";
  ctx.beginPath();
  ctx.moveTo(from[0], from[1]);
  ctx.lineTo(to[0], to[1]);
  ctx.stroke();
}

function setUpDrawing() {
  const pad = $("pad");
  const canDraw = () => info && info.channels === 1;
  let lastSent = 0;
  pad.addEventListener("pointerdown", (event) => {
    if (!canDraw()) return;
    if (!dirty) clearPad();
    drawing = true;
    dirty = true;
    pad.setPointerCapture(event.pointerId);
    lastPoint = padPoint(event);
    stroke(lastPoint, lastPoint);
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const point = padPoint(event);
    stroke(lastPoint, point);
    lastPoint = point;
    if (performance.now() - lastSent > 250) { lastSent = performance.now(); predict(); }
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    $("file-note").textContent = "";
    predict();
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", clearPad);
}

// ---- files ----------------------------------------------------------------------------
function loadFile(file) {
  if (!file) return;
  clearError();
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    URL.revokeObjectURL(url);
    const pad = $("pad");
    const ctx = pad.getContext("2d", READBACK);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    ctx.imageSmoothingEnabled = image.naturalWidth > pad.width;
    ctx.drawImage(image, 0, 0, pad.width, pad.height);
    let note = `${file.name}: ${image.naturalWidth}×${image.naturalHeight}`;
    if (image.naturalWidth !== info.width || image.naturalHeight !== info.height) {
      note += `, scaled to ${info.width}×${info.height}`;
    }
    if (info.channels === 1 && looksInverted(pad)) {
      invert(pad);
      note += "; dark ink on a light background, inverted like the training images";
    }
    $("file-note").textContent = note;
    dirty = true;
    predict();
  };
  image.onerror = () => {  // the pad and the last answers stay as they were
    URL.revokeObjectURL(url);
    refusal(file);
  };
  image.src = url;
}

// A file the browser cannot decode goes to the service as it is (the *_png
// routes check uploads), so that the person sees the service's own refusal.
async function refusal(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    await call(info.labelled ? "classify_png" : "cluster_png", form);
    showError(`“${file.name}” cannot be shown by this browser: choose a PNG or JPEG picture.`);
  } catch (error) {
    showError(`“${file.name}” is not an image the service can read: ${error.message}`);
  }
}

function setUpFiles() {
  $("image").addEventListener("change", (event) => {
    loadFile(event.target.files[0]);
    event.target.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    loadFile(event.dataTransfer.files[0]);
  });
}

// ---- start ----------------------------------------------------------------------------
function describeRun() {
  const shape = info.channels === 3 ? `${info.width}×${info.height} colour` : `${info.width}×${info.height} greyscale`;
  $("run").textContent = `${info.model} on ${info.dataset} · ${shape} images · ${info.source}`;
  $("size").textContent = `${info.width}×${info.height}`;
  const names = { classification_accuracy: "classifier", clustering_accuracy: "clustering", nmi: "NMI",
    reconstruction_error: "recon. error", codebook_usage: "codes used", perplexity: "perplexity" };
  const chips = Object.entries(info.metrics || {}).map(([k, v]) => {
    const li = document.createElement("li");
    const text = k.endsWith("accuracy") || k === "codebook_usage" ? (100 * v).toFixed(1) + " %" : v.toFixed(3);
    li.innerHTML = `${names[k] || k} <b></b>`;
    li.querySelector("b").textContent = text;
    return li;
  });
  $("metrics").replaceChildren(...chips);
  if (info.channels !== 1) {
    $("pad").classList.add("no-draw");
    $("pad-hint").textContent = "Drop an image file here or choose one (this run takes colour images).";
  } else {
    $("pad-hint").textContent = `Draw a ${info.dataset === "digits" || info.dataset === "mnist" ? "digit" : "shape"}`
      + " with the mouse or a finger, or drop an image file here.";
  }
  if (!info.labelled) {
    $("unlabelled-note").hidden = false;
    $("prediction").textContent = "no classes";
    $("prediction").classList.add("muted");
  }
  if (!info.reconstruct) {
    $("reconstruct-note").textContent = "This run was served without autoencoder.keras: no reconstruction.";
  }
}

async function start() {
  setUpDrawing();
  setUpFiles();
  try {
    info = await call("ui/config.json");
  } catch (error) {
    showError("Could not load the model description: " + error.message);
    return;
  }
  describeRun();
  clearPad();
  if (info.api_key_required && !sessionStorage.getItem(KEY)) {
    const entered = await askForKey("This service requires an API key: enter one of its keys "
      + "to use the page (it is sent as the header Authorization: Bearer <key>).");
    if (entered) sessionStorage.setItem(KEY, entered);
  }
  document.body.dataset.ready = "true";
}

start();
