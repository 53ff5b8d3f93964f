// Pixel work of the /ui page (loaded before app.js): scale any image to the
// run's size (area average), convert it to the run's channels, map 0-255 to the
// dataset's raw range 0..pixel_max, paint raw pixels back, and tell dark ink on
// light paper. `run` is the served run's /ui/config.json. No libraries.
"use strict";

const READBACK = { willReadFrequently: true };   // the page reads its canvases back

// ---- pixels -------------------------------------------------------------------------
// Area-average `source` (ImageData) down or up to width x height; returns RGBA floats.
function resize(source, width, height) {
  const out = new Float32Array(width * height * 4);
  const sx = source.width / width;
  const sy = source.height / height;
  const data = source.data;
  for (let y = 0; y < height; y++) {
    const y0 = y * sy, y1 = (y + 1) * sy;
    for (let x = 0; x < width; x++) {
      const x0 = x * sx, x1 = (x + 1) * sx;
      const acc = [0, 0, 0, 0];
      let total = 0;
      for (let j = Math.floor(y0); j < Math.min(Math.ceil(y1), source.height); j++) {
        const wy = Math.min(j + 1, y1) - Math.max(j, y0);
        for (let i = Math.floor(x0); i < Math.min(Math.ceil(x1), source.width); i++) {
          const w = wy * (Math.min(i + 1, x1) - Math.max(i, x0));
          const k = (j * source.width + i) * 4;
          for (let c = 0; c < 4; c++) acc[c] += w * data[k + c];
          total += w;
        }
      }
      const o = (y * width + x) * 4;
      for (let c = 0; c < 4; c++) out[o + c] = acc[c] / total;
    }
  }
  return out;
}

// The run-sized pixels (0-255 floats, [H][W] or [H][W][3]) of a canvas; `run` is /ui/config.json.
function modelPixels(canvas, run) {
  const ctx = canvas.getContext("2d", READBACK);
  const rgba = resize(ctx.getImageData(0, 0, canvas.width, canvas.height), run.width, run.height);
  const rows = [];
  for (let y = 0; y < run.height; y++) {
    const row = [];
    for (let x = 0; x < run.width; x++) {
      const k = (y * run.width + x) * 4;
      const a = rgba[k + 3] / 255; // transparent parts count as the black background
      const rgb = [rgba[k] * a, rgba[k + 1] * a, rgba[k + 2] * a];
      row.push(run.channels === 3 ? rgb : 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]);
    }
    rows.push(row);
  }
  return rows;
}

// Pixels 0-255 -> the dataset's raw range 0..pixel_max, rounded to keep requests small.
function toRaw(pixels, run) {
  const scale = run.pixel_max / 255;
  const map = (v) => (Array.isArray(v) ? v.map(map) : Math.round(v * scale * 1e4) / 1e4);
  return pixels.map(map);
}

// Paint raw-range pixels ([H][W] or [H][W][3], 0..pixel_max) onto a run-sized canvas.
function paint(canvas, raw, run) {
  canvas.width = run.width;
  canvas.height = run.height;
  const ctx = canvas.getContext("2d", READBACK);
  const image = ctx.createImageData(run.width, run.height);
  const scale = 255 / run.pixel_max;
  raw.forEach((row, y) => row.forEach((v, x) => {
    const rgb = Array.isArray(v) ? v : [v, v, v];
    const k = (y * run.width + x) * 4;
    for (let c = 0; c < 3; c++) image.data[k + c] = Math.max(0, Math.min(255, rgb[c] * scale));
    image.data[k + 3] = 255;
  }));
  ctx.putImageData(image, 0, 0);
}

// A light border means dark ink on light paper: the training digits are light on black.
function looksInverted(canvas) {
  const ctx = canvas.getContext("2d", READBACK);
  const { width, height } = canvas;
  const data = ctx.getImageData(0, 0, width, height).data;
  let sum = 0, n = 0;
  for (let x = 0; x < width; x += 4) {
    for (const y of [0, height - 1]) {
      const k = (y * width + x) * 4;
      sum += (data[k] + data[k + 1] + data[k + 2]) / 3;
      n++;
    }
  }
  return sum / n > 127;
}

function invert(canvas) {
  const ctx = canvas.getContext("2d", READBACK);
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  for (let k = 0; k < image.data.length; k += 4) {
    for (let c = 0; c < 3; c++) image.data[k + c] = 255 - image.data[k + c];
  }
  ctx.putImageData(image, 0, 0);
}
