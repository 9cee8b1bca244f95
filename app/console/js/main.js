// Hash routes: #upload, #gallery, #compare/<id>, #admin. Each view module shows itself.

import * as upload from "./upload.js";
import * as gallery from "./gallery.js";
import * as compare from "./compare.js";
import * as admin from "./admin.js";

const views = { upload, gallery, compare, admin };

function route() {
  const [name, param] = location.hash.replace(/^#/, "").split("/");
  const view = views[name] ? name : "gallery";
  for (const key of Object.keys(views)) {
    document.getElementById(`view-${key}`).hidden = key !== view;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  views[view].show(param ? decodeURIComponent(param) : undefined);
}

for (const view of Object.values(views)) view.init();
window.addEventListener("hashchange", route);
route();
