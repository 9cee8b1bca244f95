// Numbers in words a person reads at a glance.

export function bytes(count) {
  if (count < 1024) return `${count} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = count;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function percent(fraction) {
  return `${(fraction * 100).toFixed(1)}%`;
}

export function formatName(contentType) {
  return (contentType || "").replace("image/", "").toUpperCase();
}

export function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** A definition list's rows, from [term, description] pairs; description may be a Node. */
export function fillFacts(list, rows) {
  list.replaceChildren();
  for (const [term, description] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    if (description instanceof Node) dd.append(description);
    else dd.textContent = String(description);
    list.append(dt, dd);
  }
}

/** What an upload answer says about the bytes kept, in one sentence. */
export function savingSentence(meta) {
  const saved = meta.original_bytes - meta.stored_bytes;
  const ratio = meta.stored_bytes > 0 ? meta.original_bytes / meta.stored_bytes : 0;
  if (saved <= 0) {
    return `Kept ${bytes(meta.stored_bytes)} for a ${bytes(meta.original_bytes)} upload: nothing saved.`;
  }
  return (
    `Kept ${bytes(meta.stored_bytes)} of ${bytes(meta.original_bytes)}: ` +
    `${bytes(saved)} saved (${percent(saved / meta.original_bytes)}, ${ratio.toFixed(1)}x smaller).`
  );
}

export function shapeSentence(meta) {
  return (
    `${meta.width}×${meta.height} ${formatName(meta.content_type)}, ` +
    `stored as ${meta.stored_width}×${meta.stored_height}` +
    (meta.representation ? ` (${meta.representation})` : "") +
    `, served as ${formatName("image/" + meta.served_format)}.`
  );
}

function receiptValue(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The quality receipt of an upload answer or /meta, when the service gives one. */
export function receiptRows(meta) {
  const receipt = meta.receipt || meta.quality_receipt;
  if (!receipt || typeof receipt !== "object") return [];
  return Object.entries(receipt).map(([key, value]) => [key.replaceAll("_", " "), receiptValue(value)]);
}
