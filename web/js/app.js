// The editor: wires the graph canvas, the palette, the run state, the panels, files and shortcuts.
import { LiteGraph, LGraph, LGraphCanvas, LGraphGroup, createBounds } from "./lib.js";
import { Api } from "./api.js";
import { registerNodeTypes, colourSockets, applySeedControls } from "./nodes.js";
import { loadWorkflow, buildDefaultWorkflow, missingTypes, isEditorFormat, isApiFormat } from "./graphio.js";
import { workflowFromPng } from "./png.js";
import { Palette, SearchPopup, NODE_DRAG_TYPE } from "./palette.js";
import { UndoHistory } from "./undo.js";
import { Execution } from "./execution.js";
import { Panels } from "./panels.js";
import { ErrorMarks } from "./errors.js";
import { bindShortcuts, renderHelp } from "./shortcuts.js";

const STORAGE_KEY = "loom.workflow";
const $ = (sel) => document.querySelector(sel);

class App {
  constructor() {
    this.api = new Api();
    this.graph = new LGraph();
    this.canvasEl = $("#graph-canvas");
    LiteGraph.release_link_on_empty_shows_menu = true;
    this.canvas = new LGraphCanvas(this.canvasEl, this.graph);
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    this.canvas.low_quality_zoom_threshold = 0.45; // keep titles and widget text readable when a graph is fitted
    this.canvas.showSearchBox = (e, ctx) => this.openSearch(e, ctx);
    this.canvas.showConnectionMenu = (opts) => this.openSearch(opts.e, opts.nodeFrom
      ? { node_from: opts.nodeFrom, slot_from: opts.slotFrom, type_filter_in: opts.slotFrom.type }
      : { node_to: opts.nodeTo, slot_from: opts.slotTo, type_filter_out: opts.slotTo.type });
    this.search = new SearchPopup($("#search-popup"));
    this.palette = new Palette({ root: $("#palette-list"), search: $("#palette-search"), onAdd: (type, pos) => this.addNode(type, pos) });
    this.execution = new Execution({ api: this.api, graph: this.graph, bar: $("#overall .bar"), label: $("#overall .label") });
    this.panels = new Panels({ api: this.api, root: $("#sidebar"), app: this });
    this.errors = new ErrorMarks({ graph: this.graph, canvas: this.canvas, panel: $("#errors-panel") });
    this.name = "workflow";
    this.fitCanvas();
    new ResizeObserver(() => this.fitCanvas()).observe($("#canvas-wrap"));
  }

  async start() {
    this.bindUi();
    const info = await this.loadObjectInfo();
    registerNodeTypes(info, {
      onChange: () => this.changed(),
      upload: (file) => this.upload(file),
      openImage: (ref) => this.lightbox(ref),
      viewUrl: (ref) => this.api.viewUrl(ref),
    });
    colourSockets(this.canvas);
    this.palette.render();
    this.undo = new UndoHistory(this.graph, { onRestore: () => this.afterLoad(false) });
    this.restoreOrDefault();
    this.api.connect();
    this.api.addEventListener("connection", (e) => this.setConnected(e.detail.connected));
    this.execution.addEventListener("images", (e) => e.detail.images.forEach((ref) => this.panels.addToGallery(ref)));
    this.execution.addEventListener("preview", (e) => {
      if (!this.execution.promptId) return; // a frame decoded after the run ended
      $("#live-preview").src = e.detail.url;
      $("#live-preview").hidden = false;
    });
    this.execution.addEventListener("start", () => this.panels.refresh());
    this.execution.addEventListener("end", (e) => this.onRunEnd(e.detail));
    this.execution.addEventListener("queue", () => this.panels.refresh());
    this.panels.refresh();
    this.canvas.draw(true, true);
    document.body.dataset.ready = "true";
  }

  /** The node list; waits while the server is still loading its nodes (503) or unreachable. */
  async loadObjectInfo() {
    for (let attempt = 0; ; attempt++) {
      try {
        this.objectInfo = await this.api.objectInfo();
        return this.objectInfo;
      } catch (err) {
        if (attempt === 2) this.toast(`Waiting for the server: ${err.message}`, "error");
        await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
      }
    }
  }

  // ---- graph editing ---------------------------------------------------------------------------

  fitCanvas() {
    const wrap = $("#canvas-wrap");
    const scale = Math.max(window.devicePixelRatio, 1);
    const { clientWidth: w, clientHeight: h } = wrap;
    if (!w || !h) return;
    this.canvasEl.width = Math.round(w * scale);
    this.canvasEl.height = Math.round(h * scale);
    this.canvasEl.style.width = `${w}px`;
    this.canvasEl.style.height = `${h}px`;
    this.canvasEl.getContext("2d").scale(scale, scale);
    this.canvas.setDirty(true, true);
  }

  /** Adds a node centred on a graph position (default: the middle of the view); `side` "left" or
   * "right" puts that edge of the node at the position instead. */
  addNode(type, pos, side = "centre") {
    const node = LiteGraph.createNode(type);
    if (!node) return null;
    const [x, y] = pos ?? this.viewCentre();
    const dx = { left: 0, right: -node.size[0], centre: -node.size[0] / 2 }[side];
    node.pos = [x + dx, y - 20];
    this.graph.add(node);
    this.canvas.selectItems([node]);
    this.changed();
    return node;
  }

  viewCentre() {
    const r = this.canvasEl.getBoundingClientRect();
    return this.canvas.convertEventToCanvasOffset({ clientX: r.left + r.width / 2, clientY: r.top + r.height / 2 });
  }

  openSearch(e, link = {}) {
    const pos = this.canvas.convertEventToCanvasOffset(e);
    this.search.open({
      x: e.clientX, y: e.clientY,
      types: { inputType: link.type_filter_in, outputType: link.type_filter_out },
      choose: (type) => {
        const node = this.addNode(type, pos, link.node_from ? "left" : link.node_to ? "right" : "centre");
        if (node) this.connectNew(node, link);
      },
    });
  }

  /** Wires a node made from a dropped link to the slot the link came from. */
  connectNew(node, link) {
    if (link.node_from) {
      const out = link.node_from.outputs.indexOf(link.slot_from);
      const input = node.inputs?.findIndex((i) => i.type === link.slot_from.type) ?? -1;
      if (out >= 0 && input >= 0) link.node_from.connect(out, node, input);
    } else if (link.node_to) {
      const input = link.node_to.inputs.indexOf(link.slot_from);
      const out = node.outputs?.findIndex((o) => o.type === link.slot_from.type) ?? -1;
      if (out >= 0 && input >= 0) node.connect(out, link.node_to, input);
    }
    this.changed();
  }

  selectedNodes() { return Object.values(this.canvas.selected_nodes ?? {}); }

  groupSelected() {
    const nodes = this.selectedNodes();
    if (!nodes.length) return this.toast("Select the nodes to group first.");
    const group = new LGraphGroup("Group");
    this.graph.add(group);
    group.resizeTo(nodes, 12);
    this.changed();
  }

  /** Toggles a mode (2 mute, 4 bypass) on the selected nodes. */
  toggleMode(mode) {
    for (const node of this.selectedNodes()) node.mode = node.mode === mode ? 0 : mode;
    this.changed();
  }

  /** Called after every edit: records undo state and keeps the workflow for the next visit. */
  changed() {
    this.graph.setDirtyCanvas(true, true);
    if (!this.undo?.check()) return;
    this.persist();
  }

  persist() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ name: this.name, workflow: this.graph.serialize() }));
    } catch { /* storage full or disabled: the graph still works */ }
  }

  // ---- loading and saving --------------------------------------------------------------------

  restoreOrDefault() {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved) {
      try {
        const { name, workflow } = JSON.parse(saved);
        this.openWorkflow(workflow, name, { quiet: true });
        return;
      } catch { /* fall back to the default */ }
    }
    this.loadDefault();
  }

  loadDefault() {
    const missing = buildDefaultWorkflow(this.graph, this.objectInfo);
    if (missing.length) this.toast(`The default workflow needs nodes this server lacks: ${missing.join(", ")}`, "error");
    this.name = "txt2img";
    this.afterLoad(true);
  }

  /** Loads a workflow of either format; returns true on success. */
  openWorkflow(data, name = "workflow", { quiet = false } = {}) {
    const before = this.graph.serialize();
    try {
      loadWorkflow(this.graph, data);
    } catch (err) {
      this.graph.configure(before);
      this.toast(`Cannot load ${name}: ${err.message}`, "error");
      return false;
    }
    const missing = missingTypes(data);
    if (missing.length) this.toast(`Unknown node types (shown in red): ${missing.join(", ")}`, "error");
    this.name = name.replace(/\.(json|png)$/i, "");
    this.afterLoad(true);
    if (!quiet) this.toast(`Loaded ${this.name}`);
    return true;
  }

  afterLoad(resetUndo) {
    this.errors.clear();
    this.execution.setRunning(null);
    if (resetUndo) {
      this.undo.reset();
      this.fitView();
    }
    this.persist();
    document.title = `${this.name} · Loom`;
    this.canvas.setDirty(true, true);
  }

  /** Fits the whole graph in view, never zooming in past 100 %. */
  fitView() {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const rects = [
      ...this.graph._nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]),
      ...this.graph._groups.map((g) => [g.pos[0], g.pos[1], g.size[0], g.size[1]]),
    ];
    if (!rects.length) return;
    const bounds = createBounds(rects.map((boundingRect) => ({ boundingRect })), 30);
    const ds = this.canvas.ds;
    const { clientWidth: w, clientHeight: h } = this.canvasEl;
    ds.scale = Math.min(1, 0.95 * w / bounds[2], 0.95 * h / bounds[3]);
    ds.offset[0] = -bounds[0] - bounds[2] / 2 + w / 2 / ds.scale;
    ds.offset[1] = -bounds[1] - bounds[3] / 2 + h / 2 / ds.scale;
    this.canvas.setDirty(true, true);
  }

  /** Loads a dropped or opened file: a workflow JSON or a PNG that carries one. */
  async openFile(file) {
    try {
      const buffer = await file.arrayBuffer();
      const isPng = file.type === "image/png" || /\.png$/i.test(file.name);
      let data;
      if (isPng) {
        data = await workflowFromPng(buffer);
        if (!data) throw new Error("this PNG carries no workflow");
      } else {
        data = JSON.parse(new TextDecoder().decode(buffer));
      }
      if (!isEditorFormat(data) && !isApiFormat(data)) throw new Error("this file holds no workflow");
      this.openWorkflow(data, file.name);
    } catch (err) {
      this.toast(`Cannot open ${file.name}: ${err.message}`, "error");
    }
  }

  saveFile() {
    const name = prompt("Save the workflow as", `${this.name}.json`);
    if (!name) return;
    const blob = new Blob([JSON.stringify(this.graph.serialize(), null, 2)], { type: "application/json" });
    const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name.endsWith(".json") ? name : `${name}.json` });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    this.name = name.replace(/\.json$/i, "");
  }

  async saveToServer() {
    const name = prompt("Save on the server as", this.name);
    if (!name) return;
    const file = `${name.replace(/[\\/]/g, "_").replace(/\.json$/i, "")}.json`;
    try {
      await this.api.saveWorkflow(file, this.graph.serialize());
      this.name = file.replace(/\.json$/, "");
      this.toast(`Saved ${file} on the server`);
      this.panels.refreshWorkflows();
    } catch (err) {
      this.toast(`Cannot save: ${err.message}`, "error");
    }
  }

  async openServerWorkflow(name) {
    try {
      this.openWorkflow(await this.api.loadWorkflow(name), name);
    } catch (err) {
      this.toast(`Cannot open ${name}: ${err.message}`, "error");
    }
  }

  async upload(file) {
    try {
      const res = await this.api.uploadImage(file);
      return res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
    } catch (err) {
      this.toast(`Upload failed: ${err.message}`, "error");
      return null;
    }
  }

  // ---- running ---------------------------------------------------------------------------------

  async queue() {
    this.errors.clear();
    const count = Math.max(1, Number($("#batch").value) || 1);
    for (let i = 0; i < count; i++) {
      const workflow = this.graph.serialize();
      try {
        const res = await this.api.queuePrompt(workflow);
        this.execution.track(res.prompt_id, workflow);
        applySeedControls(this.graph);
        this.changed();
      } catch (err) {
        if (err.body?.node_errors || err.body?.error) this.errors.show(err.body);
        else this.toast(`Cannot queue: ${err.message}`, "error");
        break;
      }
    }
    this.panels.refresh();
  }

  onRunEnd(detail) {
    $("#live-preview").hidden = true;
    if (detail.status === "error") {
      this.errors.showRunError(detail);
      this.toast(`Run failed in node #${detail.node_id} ${detail.node_type ?? ""}: ${detail.exception_message ?? ""}`, "error");
    } else if (detail.status === "interrupted") {
      this.toast("Run interrupted");
    }
    this.panels.refresh();
  }

  async interrupt() {
    try {
      await this.api.interrupt();
    } catch (err) {
      this.toast(err.message, "error");
    }
  }

  // ---- chrome --------------------------------------------------------------------------------

  setConnected(connected) {
    $("#connection").dataset.state = connected ? "up" : "down";
    $("#connection").title = connected ? "Connected to the server" : "Reconnecting…";
    if (connected) this.panels.refresh();
  }

  toast(message, kind = "info", ms = 5000) {
    const t = Object.assign(document.createElement("div"), { className: `toast ${kind}`, textContent: message });
    t.addEventListener("click", () => t.remove());
    $("#toasts").append(t);
    if (ms) setTimeout(() => t.remove(), kind === "error" ? ms * 2 : ms);
  }

  lightbox(ref) {
    const box = $("#lightbox");
    box.querySelector("img").src = this.api.viewUrl(ref);
    box.querySelector(".caption").textContent = ref.filename;
    box.querySelector(".load").onclick = async () => {
      const res = await fetch(this.api.viewUrl(ref));
      const data = await workflowFromPng(await res.arrayBuffer()).catch(() => null);
      if (data) this.openWorkflow(data, ref.filename);
      else this.toast("This image carries no workflow", "error");
      box.close();
    };
    box.showModal();
  }

  bindUi() {
    $("#queue-btn").onclick = () => this.queue();
    $("#interrupt-btn").onclick = () => this.interrupt();
    $("#new-btn").onclick = () => { this.graph.clear(); this.name = "workflow"; this.afterLoad(false); this.changed(); };
    $("#default-btn").onclick = () => this.loadDefault();
    $("#open-btn").onclick = () => $("#file-input").click();
    $("#file-input").onchange = (e) => { const f = e.target.files?.[0]; if (f) this.openFile(f); e.target.value = ""; };
    $("#save-btn").onclick = () => this.saveFile();
    $("#save-server-btn").onclick = () => this.saveToServer();
    $("#help-btn").onclick = () => $("#help").showModal();
    $("#lightbox").addEventListener("click", (e) => { if (e.target.id === "lightbox") e.target.close(); });
    $("#live-preview").onclick = () => { $("#live-preview").hidden = true; };
    renderHelp($("#help .shortcuts"));
    bindShortcuts(this);
    // every pointer or key action may have edited the graph
    for (const type of ["pointerup", "keyup"]) window.addEventListener(type, () => setTimeout(() => this.changed(), 0), true);
    const wrap = $("#canvas-wrap");
    wrap.addEventListener("dragover", (e) => {
      e.preventDefault();
      wrap.classList.add("dropping");
    });
    wrap.addEventListener("dragleave", () => wrap.classList.remove("dropping"));
    wrap.addEventListener("drop", (e) => this.onDrop(e));
  }

  onDrop(e) {
    e.preventDefault();
    $("#canvas-wrap").classList.remove("dropping");
    const type = e.dataTransfer.getData(NODE_DRAG_TYPE);
    if (type) {
      this.addNode(type, this.canvas.convertEventToCanvasOffset(e));
      return;
    }
    const file = e.dataTransfer.files?.[0];
    if (file) this.openFile(file);
  }
}

const app = new App();
window.loom = app; // handy in the console and for the browser tests
app.start();
