// Model versions (cards, activate with the canary verdict, rollback, history) behind the
// admin token, and the fleet's savings and hit rate from /metrics.

import { adminToken, metricsText, models } from "./api.js";
import { bytes, fillFacts, percent, when } from "./format.js";
import { confirmAction } from "./confirm.js";
import { parseMetrics, sample, total } from "./metrics.js";

let status;
let overview = null;

export function init() {
  status = document.getElementById("admin-status");
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("admin-token");
    adminToken.set(input.value);
    input.value = "";
    refreshModels();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    adminToken.forget();
    document.getElementById("admin-body").hidden = true;
    say("Token forgotten.");
  });
  document.getElementById("rollback").addEventListener("click", rollback);
  document.getElementById("model-form").addEventListener("submit", addModel);
  document.getElementById("fleet-refresh").addEventListener("click", refreshFleet);
}

export function show() {
  refreshFleet();
  if (adminToken.get()) refreshModels();
  else say("Type the admin token (SRSTORE_ADMIN_TOKEN) to manage model versions.");
}

function say(text, error = false) {
  status.className = error ? "status error" : "status";
  status.textContent = text;
}

async function refreshFleet() {
  const list = document.getElementById("fleet-facts");
  try {
    const families = parseMetrics(await metricsText());
    const original = sample(families, "srstore_fleet_original_bytes");
    const stored = sample(families, "srstore_fleet_stored_bytes");
    const images = sample(families, "srstore_fleet_images");
    const ratio = sample(families, "srstore_fleet_savings_ratio");
    const hits = total(families, "srstore_cache_requests_total", { result: "hit" });
    const lookups = total(families, "srstore_cache_requests_total");
    fillFacts(list, [
      ["Images", images ?? "—"],
      ["Uploaded bytes", original === null ? "—" : bytes(original)],
      ["Stored bytes", stored === null ? "—" : bytes(stored)],
      ["Saved", ratio === null ? "—" : `${percent(ratio)} (${bytes(original - stored)})`],
      ["Cache hit rate", lookups ? `${percent(hits / lookups)} of ${lookups} reads (this API since start)` : "no reads yet"],
    ]);
  } catch (error) {
    fillFacts(list, [["Metrics", `unavailable: ${error.message}`]]);
  }
}

async function guarded(action) {
  try {
    return await action();
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      document.getElementById("admin-body").hidden = true;
      if (error.status === 401) adminToken.forget();
    }
    say(`${error.message} (${error.status} ${error.code})`, true);
    return null;
  }
}

/** Reload cards and history, then show `outcome` ({text, error}) or the active version. */
async function refreshModels(outcome = null) {
  const answer = await guarded(() => Promise.all([models.list(), models.history()]));
  if (!answer) return;
  [overview] = answer;
  const [, history] = answer;
  document.getElementById("admin-body").hidden = false;
  const active = overview.active ? `${overview.active.name}:${overview.active.version}` : "none (bicubic)";
  if (outcome) say(outcome.text, outcome.error);
  else say(`Active model: ${active}.`);
  document.getElementById("model-cards").replaceChildren(...overview.models.map(card));
  renderHistory(history.swaps);
}

const signedDb = (value) => `${value >= 0 ? "+" : ""}${value.toFixed(2)} dB`;

function canaryOf(model) {
  return model.card && model.card.canary ? model.card.canary : null;
}

function activeModel() {
  return overview.models.find((m) => m.active) || null;
}

const isScalar = (value) => value === null || typeof value !== "object";

/** A card field for reading: short objects on one line, larger ones folded away. */
function cardValue(value) {
  if (isScalar(value)) return String(value);
  const entries = Object.entries(value);
  if (!Array.isArray(value) && entries.length <= 4 && entries.every(([, v]) => isScalar(v))) {
    return entries.map(([k, v]) => `${k} ${v}`).join(", ");
  }
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = `${entries.length} ${Array.isArray(value) ? "items" : "fields"}`;
  const pre = document.createElement("pre");
  pre.textContent = JSON.stringify(value, null, 2);
  details.append(summary, pre);
  return details;
}

function cardFacts(model) {
  const card = model.card || {};
  const canary = canaryOf(model);
  const rows = [];
  // The same names and definitions as `srstore models list` and the README.
  if (canary) {
    rows.push(["Canary Y-PSNR", `${canary.model_psnr.toFixed(2)} dB (bicubic ${canary.bicubic_psnr.toFixed(2)} dB)`]);
    rows.push(["Canary gain", signedDb(canary.gain_db)]);
    if (canary.codec) rows.push(["Canary codec", canary.codec]);
  }
  const heldOut = card.evaluation && card.evaluation.mean ? card.evaluation.mean.gain_db : null;
  if (typeof heldOut === "number") rows.push(["Held-out gain", signedDb(heldOut)]);
  for (const [key, value] of Object.entries(card)) {
    if (["name", "version", "canary", "architecture"].includes(key)) continue;
    rows.push([key.replaceAll("_", " "), cardValue(value)]);
  }
  return rows;
}

function card(model) {
  const label = `${model.name}:${model.version}`;
  const item = document.createElement("li");
  item.dataset.model = label;
  if (model.active) item.classList.add("active");
  const title = document.createElement("h4");
  title.textContent = label;
  if (model.active) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "active";
    title.append(badge);
  }
  item.append(title);
  if (model.card && model.card.architecture) {
    const architecture = document.createElement("p");
    architecture.className = "hint";
    architecture.textContent = model.card.architecture;
    item.append(architecture);
  }
  const facts = document.createElement("dl");
  fillFacts(facts, cardFacts(model));
  item.append(facts);
  if (!model.active) {
    const verdict = document.createElement("p");
    verdict.className = "verdict";
    verdict.textContent = verdictOf(model);
    const actions = document.createElement("div");
    actions.className = "card-actions";
    const activate = document.createElement("button");
    activate.type = "button";
    activate.textContent = `Activate ${label}`;
    activate.addEventListener("click", () => activateModel(model, false));
    actions.append(activate);
    item.append(verdict, actions);
  }
  return item;
}

/** What the canary set says about activating `model` over the active one. */
function verdictOf(model) {
  const active = activeModel();
  const mine = canaryOf(model);
  const theirs = active ? canaryOf(active) : null;
  if (!mine || !theirs) return "Canary verdict: no active version to compare with.";
  const delta = mine.model_psnr - theirs.model_psnr;
  const sign = delta >= 0 ? "+" : "";
  const side = delta >= -0.01 ? "not worse than" : "worse than";
  return `Canary verdict: ${sign}${delta.toFixed(2)} dB against ${active.name}:${active.version}, ${side} the active version.`;
}

async function activateModel(model, force) {
  const label = `${model.name}:${model.version}`;
  let outcome;
  try {
    const answer = await models.activate(model.name, model.version, force);
    outcome = {
      text: answer.changed
        ? `Activated ${label}${force ? " (forced)" : ""}: the fleet switches between requests.`
        : `${label} was already active.`,
    };
  } catch (error) {
    if (error.code !== "worse_than_active") {
      outcome = { text: `${error.message} (${error.status} ${error.code})`, error: true };
    } else {
      say(`Refused by the canary check: ${error.message}`, true);
      if (await confirmAction(`${error.message}. Activate ${label} anyway?`, "Activate anyway")) {
        return activateModel(model, true);
      }
      outcome = { text: `Refused by the canary check: ${error.message}`, error: true };
    }
  }
  await refreshModels(outcome);
}

async function addModel(event) {
  event.preventDefault();
  const weights = document.getElementById("model-weights").files[0];
  const card = document.getElementById("model-card").files[0];
  say(`Scoring ${weights.name} on the canary set…`);
  let outcome;
  try {
    const added = await models.upload(weights, card);
    const canary = added.card.canary;
    outcome = { text: `Registered ${added.name}:${added.version}: canary Y-PSNR ${canary.model_psnr.toFixed(2)} dB, canary gain ${signedDb(canary.gain_db)}. Not active yet.` };
    event.target.reset();
  } catch (error) {
    outcome = { text: `Not registered: ${error.message} (${error.status} ${error.code})`, error: true };
  }
  await refreshModels(outcome);
}

async function rollback() {
  if (!(await confirmAction("Roll the whole fleet back to the version active before the last swap?", "Roll back"))) {
    return;
  }
  const answer = await guarded(() => models.rollback());
  if (!answer) return;
  const { name, version } = answer.active;
  await refreshModels({ text: `Rolled back: ${answer.swap.from_label ?? "none"} → ${name}:${version}.` });
}

function renderHistory(swaps) {
  const body = document.querySelector("#history tbody");
  body.replaceChildren(
    ...swaps.map((swap) => {
      const row = document.createElement("tr");
      for (const text of [when(swap.at), swap.action, swap.from_label ?? "—", swap.to_label, swap.forced ? "yes" : "no"]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }),
  );
}
