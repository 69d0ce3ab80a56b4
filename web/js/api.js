// The client of Loom's ComfyUI-compatible HTTP and WebSocket API.
// Socket messages are re-dispatched as DOM events named after their `type` (detail = data);
// binary preview frames become a `preview` event whose detail is {blob}.

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

const PREVIEW_FRAME = 1;
const IMAGE_MIME = { 1: "image/jpeg", 2: "image/png" };

function newClientId() {
  return globalThis.crypto?.randomUUID?.() ?? Math.random().toString(36).slice(2) + Date.now().toString(36);
}

export class Api extends EventTarget {
  constructor(base = "") {
    super();
    this.base = base;
    this.clientId = sessionStorage.getItem("loom.clientId") || newClientId();
    sessionStorage.setItem("loom.clientId", this.clientId);
    this.socket = null;
    this.connected = false;
  }

  async request(path, { method = "GET", json, body, raw = false } = {}) {
    const init = { method, cache: "no-store" };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers = { "Content-Type": "application/json" };
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(this.base + path, init);
    } catch (err) {
      throw new ApiError(0, null, `cannot reach the server (${err.message})`);
    }
    if (raw && response.ok) return response;
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch { /* plain text body */ }
    if (!response.ok) {
      const msg = data?.error?.message ?? data?.error ?? (typeof data === "string" ? data : response.statusText);
      throw new ApiError(response.status, data, `${method} ${path}: ${response.status} ${msg}`);
    }
    return data;
  }

  objectInfo() { return this.request("/object_info"); }

  /** Queues the editor's own serialized workflow; the server converts it. */
  queuePrompt(workflow, { front = false } = {}) {
    return this.request("/prompt", {
      method: "POST",
      // previews are sent only to a client that asks for them (ComfyUI's preview_method)
      json: { prompt: workflow, client_id: this.clientId, front,
              extra_data: { extra_pnginfo: { workflow }, preview_method: "auto" } },
    });
  }

  getQueue() { return this.request("/queue"); }
  deleteQueued(ids) { return this.request("/queue", { method: "POST", json: { delete: ids } }); }
  clearQueue() { return this.request("/queue", { method: "POST", json: { clear: true } }); }
  interrupt(promptId) {
    return this.request("/interrupt", { method: "POST", json: promptId ? { prompt_id: promptId } : {} });
  }
  getHistory(max = 64) { return this.request(`/history?max_items=${max}`); }
  /** The queue and the history as light job summaries (ComfyUI's jobs API), newest first. */
  getJobs({ limit = 64, offset = 0 } = {}) { return this.request(`/api/jobs?limit=${limit}&offset=${offset}`); }
  /** One job with its outputs and the workflow it ran. */
  getJob(id) { return this.request(`/api/jobs/${encodeURIComponent(id)}`); }
  clearHistory() { return this.request("/history", { method: "POST", json: { clear: true } }); }
  deleteHistory(ids) { return this.request("/history", { method: "POST", json: { delete: ids } }); }

  viewUrl({ filename, subfolder = "", type = "output" }) {
    const q = new URLSearchParams({ filename, subfolder, type });
    return `${this.base}/view?${q}`;
  }

  async uploadImage(file, { overwrite = false } = {}) {
    const form = new FormData();
    form.append("image", file, file.name);
    form.append("overwrite", String(overwrite));
    form.append("type", "input");
    return this.request("/upload/image", { method: "POST", body: form });
  }

  /** Names (without folder) of the workflows saved on the server. */
  async listWorkflows() {
    const names = await this.request("/userdata?dir=workflows");
    return (Array.isArray(names) ? names : [])
      .map((n) => (typeof n === "string" ? n : n?.path ?? ""))
      .map((n) => n.replace(/^workflows\//, ""))
      .filter((n) => n.endsWith(".json"))
      .sort();
  }
  workflowPath(name) { return `/userdata/workflows/${encodeURIComponent(name)}`; }
  loadWorkflow(name) { return this.request(this.workflowPath(name)); }
  saveWorkflow(name, workflow) {
    return this.request(`${this.workflowPath(name)}?overwrite=true`, { method: "POST", json: workflow });
  }
  deleteWorkflow(name) { return this.request(this.workflowPath(name), { method: "DELETE" }); }

  /** Opens the socket and keeps it open, reconnecting with a growing delay. */
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${proto}//${location.host}${this.base}/ws?clientId=${encodeURIComponent(this.clientId)}`;
    let delay = 500;
    const open = () => {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      this.socket = ws;
      ws.addEventListener("open", () => {
        delay = 500;
        this.connected = true;
        this.emit("connection", { connected: true });
      });
      ws.addEventListener("close", () => {
        if (this.connected) this.emit("connection", { connected: false });
        this.connected = false;
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 8000);
      });
      ws.addEventListener("message", (event) => this.onMessage(event.data));
    };
    open();
  }

  onMessage(data) {
    if (data instanceof ArrayBuffer) {
      if (data.byteLength < 8) return;
      const view = new DataView(data);
      if (view.getUint32(0) !== PREVIEW_FRAME) return;
      const mime = IMAGE_MIME[view.getUint32(4)] ?? "image/jpeg";
      this.emit("preview", { blob: new Blob([data.slice(8)], { type: mime }) });
      return;
    }
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg && typeof msg.type === "string") this.emit(msg.type, msg.data ?? {});
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
