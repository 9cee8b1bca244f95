// Upload several files at once, a progress bar each, and the answer in words.

import { uploadFile } from "./api.js";
import { receiptSentence, savingSentence, shapeSentence } from "./format.js";

let list;

export function init() {
  list = document.getElementById("upload-list");
  const zone = document.getElementById("drop-zone");
  const input = document.getElementById("file-input");
  input.addEventListener("change", () => {
    uploadAll(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    uploadAll(event.dataTransfer.files);
  });
}

export function show() {}

function uploadAll(files) {
  for (const file of Array.from(files)) uploadOne(file);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function uploadOne(file) {
  const item = element("li", "upload-item");
  const preview = element("img");
  preview.alt = "";
  const name = element("div", "upload-name", file.name);
  const progress = element("progress");
  progress.max = 100;
  progress.value = 0;
  progress.setAttribute("aria-label", `Upload progress of ${file.name}`);
  const result = element("div", "upload-result", "Uploading…");
  result.setAttribute("role", "status");
  item.append(preview, name, progress, result);
  list.prepend(item);
  try {
    const meta = await uploadFile(file, (fraction) => {
      progress.value = Math.round(fraction * 100);
    });
    progress.value = 100;
    item.dataset.id = meta.id;
    preview.src = `/v1/images/${meta.id}/stored`;
    preview.alt = `Stored copy of ${file.name}`;
    result.replaceChildren(...describe(meta));
  } catch (error) {
    result.className = "upload-result error";
    result.textContent = `Not stored: ${error.message} (${error.code}).`;
  }
}

function describe(meta) {
  const parts = [element("p", "saving", savingSentence(meta)), element("p", "", shapeSentence(meta))];
  const receipt = receiptSentence(meta);
  if (receipt) parts.push(element("p", "receipt", receipt));
  const links = element("p");
  const compare = element("a", "", "Compare");
  compare.href = `#compare/${meta.id}`;
  const id = element("span", "id", ` id ${meta.id}`);
  links.append(compare, id);
  parts.push(links);
  return parts;
}
