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
    (meta.representation ? ` (${representationWords(meta.representation)})` : "") +
    `, served as ${formatName("image/" + meta.served_format)}.`
  );
}

const REPRESENTATIONS = {
  x4: "the 4x-downscaled copy, rebuilt by super-resolution on read",
  avif: "the full-size image as AVIF",
  webp: "the full-size image as WebP",
  original: "the original bytes",
};

/** A representation in words (the quality-guarded storage policies name several). */
export function representationWords(representation) {
  return REPRESENTATIONS[representation] || String(representation);
}

function score(value, digits, unit = "") {
  if (value === "inf" || value === Infinity) return "∞ (identical)";
  return typeof value === "number" ? `${value.toFixed(digits)}${unit}` : String(value);
}

function receiptValue(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${receiptValue(v)}`).join(", ");
  }
  return String(value);
}

const RECEIPT_STATES = {
  pending: "pending: scored and chosen in the background",
  done: "done",
  failed: "failed: the x4 copy is kept unscored",
};

const RECEIPT_LABELS = {
  state: ["Receipt", (v) => RECEIPT_STATES[v] || String(v)],
  policy: ["Policy", String],
  floor: ["Floor", String],
  quality: ["Codec quality", String],
  psnr: ["Y-PSNR vs upload", (v) => score(v, 2, " dB")],
  ssim: ["SSIM vs upload", (v) => score(v, 4)],
  meets_floor: ["Meets the floor", (v) => (v ? "yes" : "no")],
  representation: ["Kept as", representationWords],
  stored_bytes: ["Bytes kept", (v) => `${bytes(v)} (${v} bytes)`],
  model: ["Scored with", String],
  x4: ["The x4 copy scored", receiptValue],
  error: ["Scoring failed", String],
};

/** The quality receipt of an upload answer or /meta, as [term, description] rows; [] without. */
export function receiptRows(meta) {
  const receipt = meta.receipt;
  if (!receipt || typeof receipt !== "object") return [];
  return Object.entries(receipt)
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([key, value]) => {
      const [label, show] = RECEIPT_LABELS[key] || [key.replaceAll("_", " "), receiptValue];
      return [label, show(value)];
    });
}

/** The receipt in one sentence, for the upload list; "" without a receipt. */
export function receiptSentence(meta) {
  const receipt = meta.receipt;
  if (!receipt || typeof receipt !== "object") return "";
  if (receipt.state === "pending") {
    return `Quality receipt: pending (policy ${receipt.policy}, floor ${receipt.floor}); the image is readable now and is scored in the background.`;
  }
  if (receipt.error) return `Quality receipt: scoring failed (${receipt.error}).`;
  const scores = [];
  if (receipt.psnr !== undefined && receipt.psnr !== null) scores.push(`Y-PSNR ${score(receipt.psnr, 2, " dB")}`);
  if (receipt.ssim !== undefined && receipt.ssim !== null) scores.push(`SSIM ${score(receipt.ssim, 4)}`);
  if (!scores.length) return `Quality receipt: ${receiptRows(meta).map(([k, v]) => `${k} ${v}`).join("; ")}.`;
  let sentence = `Quality receipt: ${scores.join(", ")} against the upload`;
  if (receipt.model) sentence += ` (scored with ${receipt.model})`;
  if (receipt.policy && receipt.floor) {
    const verdict = receipt.meets_floor === false ? "below the floor" : receipt.meets_floor ? "meets it" : "";
    sentence += `; policy ${receipt.policy}, floor ${receipt.floor}${verdict ? `: ${verdict}` : ""}`;
  }
  return `${sentence}.`;
}
