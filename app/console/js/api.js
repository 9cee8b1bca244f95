// The public HTTP API, and nothing else: every call goes to this page's own origin.

const TOKEN_KEY = "srstore.adminToken";
const API_KEY = "srstore.apiKey";

/** The API key the console signed in with: this tab's session storage only. */
export const apiKey = {
  get: () => sessionStorage.getItem(API_KEY),
  set: (key) => sessionStorage.setItem(API_KEY, key),
  forget: () => sessionStorage.removeItem(API_KEY),
};

function signedIn(headers = {}) {
  const key = apiKey.get();
  return key ? { Authorization: `Bearer ${key}`, ...headers } : headers;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function failure(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch {
    // not the JSON error envelope: keep the status line
  }
  return new ApiError(response.status, code, message);
}

async function call(path, options = {}) {
  const headers = signedIn(options.headers || {});
  const response = await fetch(path, { cache: "no-store", ...options, headers });
  if (!response.ok) throw await failure(response);
  return response;
}

export async function listImages(limit, cursor) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (cursor) query.set("cursor", cursor);
  return (await call(`/v1/images?${query}`)).json();
}

export async function imageMeta(id) {
  return (await call(`/v1/images/${encodeURIComponent(id)}/meta`)).json();
}

/** The bytes of a URL with the headers that describe them. */
export async function fetchBlob(path) {
  const response = await call(path);
  return { blob: await response.blob(), headers: response.headers };
}

export function storedUrl(id) {
  return `/v1/images/${encodeURIComponent(id)}/stored`;
}

const THUMBNAIL_WIDTH = 320;

/**
 * A thumbnail no larger than a quarter of the upload, so the service makes it from the stored
 * copy without running the model (size on read). A quarter, not the stored copy's size: that
 * copy is padded to a multiple of 4, so it can be a pixel larger than a quarter.
 */
export function thumbnailUrl(meta) {
  const width = Math.max(1, Math.min(THUMBNAIL_WIDTH, Math.floor(meta.width / 4)));
  return `/v1/images/${encodeURIComponent(meta.id)}?w=${width}`;
}

export function servedUrl(id) {
  return `/v1/images/${encodeURIComponent(id)}`;
}

export async function deleteImage(id) {
  await call(`/v1/images/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/**
 * POST one file with XMLHttpRequest: fetch() cannot report upload progress.
 * `onProgress` gets the fraction sent, 0..1.
 */
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/images");
    request.responseType = "json";
    for (const [name, value] of Object.entries(signedIn())) request.setRequestHeader(name, value);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      const body = request.response;
      if (request.status === 201) {
        resolve(body);
      } else {
        const error = body && body.error ? body.error : { code: "http_error", message: `${request.status}` };
        reject(new ApiError(request.status, error.code, error.message));
      }
    });
    request.addEventListener("error", () => reject(new ApiError(0, "network", "the upload did not reach the server")));
    const form = new FormData();
    form.append("file", file, file.name);
    request.send(form);
  });
}

export async function metricsText() {
  return (await call("/metrics")).text();
}

export const adminToken = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  forget: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** Who the console is signed in as, and what it may do: GET /v1/access. */
export async function whoami() {
  return (await call("/v1/access")).json();
}

async function admin(path, options = {}) {
  const credential = adminToken.get() || apiKey.get() || "";
  const headers = { Authorization: `Bearer ${credential}`, ...(options.headers || {}) };
  return (await call(`/v1/admin${path}`, { ...options, headers })).json();
}

export const models = {
  list: () => admin("/models"),
  upload: async (weights, card) => {
    const form = new FormData();
    form.append("weights", weights, weights.name);
    form.append("card", await card.text());
    return admin("/models", { method: "POST", body: form });
  },
  history: () => admin("/models/history"),
  rollback: () => admin("/models/rollback", { method: "POST" }),
  activate: (name, version, force) =>
    admin("/models/active", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, version, force }),
    }),
};
