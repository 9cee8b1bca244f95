// One image: what srstore serves against a bicubic upscale of the same stored copy, split
// by a slider, at fit or 1:1 pixels; the stored copy, its bytes, the model and the receipt.

import { deleteImage, fetchBlob, imageMeta, servedUrl, storedUrl } from "./api.js";
import { bicubicResize } from "./bicubic.js";
import { confirmAction } from "./confirm.js";
import {
  bytes,
  fillFacts,
  formatName,
  receiptRows,
  representationWords,
  savingSentence,
  when,
} from "./format.js";

const SCALE = 4; // the stored copy is the upload downscaled 4x (padded to a multiple of 4)
let el;
let current = null; // { id, meta }
let loading = 0;
let objectUrls = [];

export function init() {
  el = Object.fromEntries(
    ["form", "id", "status", "body", "viewport", "stage", "bicubic", "served", "divider",
      "served-facts", "stored", "stored-facts", "receipt", "delete", "tag-left", "tag-right"].map((name) => [
      name,
      document.getElementById(`compare-${name}`),
    ]),
  );
  el.split = document.getElementById("split");
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#compare/${el.id.value.trim()}`;
  });
  el.split.addEventListener("input", () => setSplit(Number(el.split.value)));
  for (const radio of document.querySelectorAll('input[name="zoom"]')) {
    radio.addEventListener("change", layout);
  }
  let dragging = false;
  el.stage.addEventListener("pointerdown", (event) => {
    dragging = true;
    el.stage.setPointerCapture(event.pointerId);
    splitAt(event.clientX);
  });
  el.stage.addEventListener("pointermove", (event) => dragging && splitAt(event.clientX));
  el.stage.addEventListener("pointerup", () => (dragging = false));
  el.delete.addEventListener("click", remove);
  window.addEventListener("resize", layout);
}

export function show(id) {
  if (!id) {
    el.status.className = "status";
    el.status.textContent = current ? "" : "Enter an image id, or open one from the gallery.";
    if (current) location.replace(`#compare/${current.id}`);
    return;
  }
  if (current && current.id === id) return;
  el.id.value = id;
  load(id);
}

function splitAt(clientX) {
  const box = el.stage.getBoundingClientRect();
  const value = Math.round(((clientX - box.left) / box.width) * 100);
  el.split.value = String(Math.min(100, Math.max(0, value)));
  setSplit(Number(el.split.value));
}

function setSplit(value) {
  el.served.style.clipPath = `inset(0 0 0 ${value}%)`;
  el.divider.style.left = `${value}%`;
}

function layout() {
  if (!current) return;
  const { width, height } = current.meta;
  const actual = document.querySelector('input[name="zoom"]:checked').value === "actual";
  el.stage.classList.toggle("actual", actual);
  if (actual) {
    // One image pixel per device pixel.
    el.stage.style.width = `${width / devicePixelRatio}px`;
    el.stage.style.height = `${height / devicePixelRatio}px`;
  } else {
    const fit = Math.min(el.viewport.clientWidth / width, (innerHeight * 0.7) / height, 1 / devicePixelRatio);
    el.stage.style.width = `${Math.floor(width * fit)}px`;
    el.stage.style.height = `${Math.floor(height * fit)}px`;
  }
}

async function decode(blob) {
  const bitmap = await createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

// What the left side shows for each representation kept (the upload's "representation").
const KEPT_AS = { avif: "stored AVIF", webp: "stored WebP", original: "original upload" };

/**
 * The left side: the stored copy upscaled 4x with bicubic and cropped to the upload's size;
 * a full-size stored copy (a quality-guarded policy kept one) is shown as it is, and named.
 */
function drawBicubic(stored, meta) {
  const downscaled = meta.representation
    ? meta.representation === "x4"
    : meta.stored_width < meta.width || meta.stored_height < meta.height;
  const scale = downscaled ? SCALE : 1;
  el["tag-left"].textContent = downscaled ? "bicubic" : KEPT_AS[meta.representation] || "stored copy";
  const upscaled = scale === 1 ? stored : bicubicResize(stored, stored.width * scale, stored.height * scale);
  el.bicubic.width = meta.width;
  el.bicubic.height = meta.height;
  el.bicubic.getContext("2d").putImageData(upscaled, 0, 0);
}

function remember(blob) {
  const url = URL.createObjectURL(blob);
  objectUrls.push(url);
  return url;
}

async function load(id) {
  const ticket = ++loading;
  el.status.className = "status";
  el.status.textContent = "Loading…";
  el.body.hidden = true;
  try {
    const meta = await imageMeta(id);
    const [served, stored] = await Promise.all([fetchBlob(servedUrl(id)), fetchBlob(storedUrl(id))]);
    const storedPixels = await decode(stored.blob);
    if (ticket !== loading) return;
    for (const url of objectUrls) URL.revokeObjectURL(url);
    objectUrls = [];
    current = { id, meta };
    drawBicubic(storedPixels, meta);
    el.served.src = remember(served.blob);
    el.stored.src = remember(stored.blob);
    const model = served.headers.get("X-Model-Version") || "unknown";
    el["tag-right"].textContent = `srstore (${model})`;
    describe(meta, served, stored, model);
    el.body.hidden = false;
    setSplit(Number(el.split.value));
    layout();
    el.status.textContent = `Image ${id}: ${meta.width}×${meta.height}, served by ${model}.`;
  } catch (error) {
    if (ticket !== loading) return;
    current = null;
    el.status.className = "status error";
    el.status.textContent = `Cannot open ${id}: ${error.message}`;
  }
}

function describe(meta, served, stored, model) {
  fillFacts(el["served-facts"], [
    ["Size", `${meta.width}×${meta.height} px`],
    ["Format", formatName(served.blob.type)],
    ["Bytes", bytes(served.blob.size)],
    ["Model version", model],
    ["Cache", served.headers.get("X-Cache") || "—"],
  ]);
  fillFacts(el["stored-facts"], [
    ["Size", `${meta.stored_width}×${meta.stored_height} px`],
    ["Format", formatName(stored.blob.type)],
    ["Bytes kept", `${bytes(stored.blob.size)} (${stored.blob.size} bytes)`],
    ["Upload", `${bytes(meta.original_bytes)} ${formatName(meta.content_type)}`],
    ["Saving", savingSentence(meta)],
    ["Uploaded", when(meta.created_at)],
    ...(meta.representation ? [["Representation", representationWords(meta.representation)]] : []),
  ]);
  const rows = receiptRows(meta);
  if (rows.length) {
    const list = document.createElement("dl");
    fillFacts(list, rows);
    el.receipt.replaceChildren(list);
  } else {
    el.receipt.textContent = "This image's /meta carries no quality receipt.";
  }
}

async function remove() {
  if (!current) return;
  const { id } = current;
  const sure = await confirmAction(`Delete image ${id}? This cannot be undone.`, "Delete");
  if (!sure) return;
  try {
    await deleteImage(id);
    current = null;
    el.body.hidden = true;
    el.status.textContent = `Deleted image ${id}.`;
  } catch (error) {
    el.status.className = "status error";
    el.status.textContent = `Not deleted: ${error.message}`;
  }
}
