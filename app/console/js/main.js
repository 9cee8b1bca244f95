// Hash routes: #upload, #gallery, #compare/<id>, #admin. Each view module shows itself.
// A view the signed-in key (or no key) may not use is disabled, with the reason.

import * as upload from "./upload.js";
import * as gallery from "./gallery.js";
import * as compare from "./compare.js";
import * as admin from "./admin.js";
import { apiKey, whoami } from "./api.js";

const views = { upload, gallery, compare, admin };

const SCOPE_NAMES = { upload: "upload", list: "list", read: "read" };
let refusals = {}; // view name -> why it is disabled

function refusalFor(scope, caller) {
  if (caller.scopes.includes(scope)) return null;
  if (caller.key_id) return `this key (${caller.key_id}) lacks the ${SCOPE_NAMES[scope]} scope`;
  if (caller.access.startsWith("protected")) {
    return "no API key exists yet: only this machine may upload, list and delete (sign in with a key from `srstore keys create`)";
  }
  return `sign in with an API key that has the ${SCOPE_NAMES[scope]} scope`;
}

async function applyAccess() {
  const status = document.getElementById("key-status");
  let caller;
  try {
    caller = await whoami();
  } catch (error) {
    if (error.status === 401) apiKey.forget();
    status.textContent = `Sign-in refused: ${error.message}`;
    caller = await whoami().catch(() => ({ key_id: null, tenant: null, scopes: [], access: "" }));
  }
  if (caller.key_id) {
    status.textContent = `Signed in with key ${caller.key_id} (tenant ${caller.tenant ?? "all"}): ${caller.scopes.join(", ")}.`;
  } else if (!status.textContent.startsWith("Sign-in refused")) {
    status.textContent = `Not signed in: ${caller.scopes.length ? caller.scopes.join(", ") : "nothing"} allowed.`;
  }
  refusals = {};
  for (const link of document.querySelectorAll("nav a[data-scope]")) {
    const reason = refusalFor(link.dataset.scope, caller);
    if (reason) {
      refusals[link.dataset.view] = reason;
      link.setAttribute("aria-disabled", "true");
      link.title = reason;
    } else {
      link.removeAttribute("aria-disabled");
      link.removeAttribute("title");
    }
  }
  route();
}

function route() {
  const [name, param] = location.hash.replace(/^#/, "").split("/");
  const view = views[name] ? name : "gallery";
  const refused = document.getElementById("view-refused");
  refused.hidden = !refusals[view];
  refused.textContent = refusals[view] ? `${view[0].toUpperCase()}${view.slice(1)} is disabled: ${refusals[view]}.` : "";
  for (const key of Object.keys(views)) {
    document.getElementById(`view-${key}`).hidden = key !== view;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (refusals[view]) {
    document.getElementById(`view-${view}`).hidden = true;
    return;
  }
  views[view].show(param ? decodeURIComponent(param) : undefined);
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("api-key");
  if (input.value.trim()) apiKey.set(input.value.trim());
  input.value = "";
  document.getElementById("key-status").textContent = "";
  applyAccess();
});
document.getElementById("key-forget").addEventListener("click", () => {
  apiKey.forget();
  document.getElementById("key-status").textContent = "";
  applyAccess();
});

for (const view of Object.values(views)) view.init();
window.addEventListener("hashchange", route);
applyAccess();
