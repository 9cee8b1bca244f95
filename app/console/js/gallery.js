// A page of stored images at a time, from GET /v1/images and its cursors.

import { deleteImage, listImages, storedUrl, thumbnailUrl } from "./api.js";
import { confirmAction } from "./confirm.js";
import { bytes, formatName, percent } from "./format.js";

const PAGE_SIZE = 24;
let cursors = [null]; // cursors[i] opens page i
let page = 0;
let nextCursor = null;
let grid;
let status;

export function init() {
  grid = document.getElementById("gallery-grid");
  status = document.getElementById("gallery-status");
  document.getElementById("gallery-prev").addEventListener("click", () => load(page - 1));
  document.getElementById("gallery-next").addEventListener("click", () => {
    cursors[page + 1] = nextCursor;
    load(page + 1);
  });
  document.getElementById("gallery-refresh").addEventListener("click", () => load(page));
}

export function show() {
  cursors = [null];
  load(0);
}

async function load(index) {
  status.className = "status";
  status.textContent = "Loading…";
  try {
    const answer = await listImages(PAGE_SIZE, cursors[index]);
    page = index;
    nextCursor = answer.next_cursor;
    render(answer.images);
    status.textContent = answer.images.length
      ? `${answer.images.length} image${answer.images.length === 1 ? "" : "s"} on this page.`
      : index === 0
        ? "No images stored yet."
        : "No more images: this page's were deleted.";
  } catch (error) {
    status.className = "status error";
    status.textContent = `The listing failed: ${error.message}`;
  }
  document.getElementById("gallery-page").textContent = `Page ${page + 1}`;
  document.getElementById("gallery-prev").disabled = page === 0;
  document.getElementById("gallery-next").disabled = !nextCursor;
}

function render(images) {
  grid.replaceChildren(...images.map(card));
}

function card(meta) {
  const item = document.createElement("li");
  item.dataset.id = meta.id;
  const thumb = document.createElement("img");
  thumb.src = thumbnailUrl(meta);
  // Where sized URLs must be signed (SRSTORE_URL_SIGNING_KEY), show the stored copy instead.
  thumb.addEventListener("error", () => (thumb.src = storedUrl(meta.id)), { once: true });
  thumb.loading = "lazy";
  thumb.alt = `${meta.width}×${meta.height} ${formatName(meta.content_type)} image ${meta.id}`;
  const facts = document.createElement("p");
  facts.className = "facts";
  const kept = meta.original_bytes ? meta.stored_bytes / meta.original_bytes : 0;
  facts.textContent =
    `${meta.width}×${meta.height} ${formatName(meta.content_type)} · ` +
    `kept ${bytes(meta.stored_bytes)} of ${bytes(meta.original_bytes)} (${percent(kept)})`;
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = meta.id;
  const actions = document.createElement("div");
  actions.className = "actions";
  const compare = document.createElement("a");
  compare.href = `#compare/${meta.id}`;
  compare.textContent = "Compare";
  compare.setAttribute("aria-label", `Compare image ${meta.id}`);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "danger";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete image ${meta.id}`);
  remove.addEventListener("click", () => confirmDelete(meta));
  actions.append(compare, remove);
  item.append(thumb, facts, id, actions);
  return item;
}

async function confirmDelete(meta) {
  const sure = await confirmAction(
    `Delete image ${meta.id} (${meta.width}×${meta.height})? Its stored copy and every cached rendition are removed; this cannot be undone.`,
    "Delete",
  );
  if (!sure) return;
  try {
    await deleteImage(meta.id);
    status.className = "status";
    await load(page);
    status.textContent = `Deleted image ${meta.id}.`;
  } catch (error) {
    status.className = "status error";
    status.textContent = `Not deleted: ${error.message}`;
  }
}
