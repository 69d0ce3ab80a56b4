// The editor: wires the graph canvas, the palette, the run state, the panels, files and shortcuts.
import { LiteGraph, LGraph, LGraphCanvas, LGraphGroup, createBounds } from "./lib.js";
import { Api } from "./api.js";
import { registerNodeTypes, colourSockets, applySeedControls } from "./nodes.js";
import { loadWorkflow, buildDefaultWorkflow, missingTypes, isEditorFormat, isApiFormat, freeSpot } from "./graphio.js";
import { workflowFromPng } from "./png.js";
import { Palette, SearchPopup, NODE_DRAG_TYPE } from "./palette.js";
import { UndoHistory } from "./undo.js";
import { Execution } from "./execution.js";
import { Panels } from "./panels.js";
import { ErrorMarks } from "./errors.js";
import { bindShortcuts, renderHelp } from "./shortcuts.js";
import { Layout } from "./layout.js";
import { DomWidgets, InlineEditor } from "./widgets.js";
import { Tooltips } from "./tooltips.js";
import { Subgraphs } from "./subgraphs.js";
import { installMenus } from "./menus.js";

const STORAGE_KEY = "loom.workflow";
const IDS_KEY = "loom.showIds";
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
    this.layout = new Layout({ canvas: this.canvas, canvasEl: this.canvasEl, wrap: $("#canvas-wrap") });
    this.dom = new DomWidgets(this.canvas, $("#dom-widgets"));
    this.inline = new InlineEditor(this.canvas, $("#dom-widgets"));
    this.tooltips = new Tooltips({ canvas: this.canvas, tip: $("#tooltip") });
    this.subgraphs = new Subgraphs({
      graph: this.graph, canvas: this.canvas, crumbs: $("#breadcrumbs"), fitView: () => this.fitView(),
      onChange: () => this.changed(), toast: (m) => this.toast(m),
    });
    installMenus(this);
    this.showIds = localStorage.getItem(IDS_KEY) === "true";
    this.silencePointerCancel();
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
  }

  async start() {
    this.bindUi();
    const info = await this.loadObjectInfo();
    registerNodeTypes(info, {
      onChange: () => this.changed(),
      upload: (file) => this.upload(file),
      openImage: (ref) => this.lightbox(ref),
      viewUrl: (ref) => this.api.viewUrl(ref),
      showIds: () => this.showIds,
      rename: (node) => this.renameNode(node),
      dom: this.dom,
      canvas: this.canvas,
    });
    colourSockets(this.canvas);
    this.palette.render();
    this.undo = new UndoHistory(this.graph, { onRestore: () => this.afterLoad(false) });
    this.restoreOrDefault();
    this.api.connect();
    this.api.addEventListener("connection", (e) => this.setConnected(e.detail.connected));
    this.execution.addEventListener("images", (e) => e.detail.images.forEach((ref) => this.panels.addToGallery(ref)));
    this.execution.addEventListener("preview", (e) => {
      // a node with no room of its own shows its preview in the canvas corner
      if (e.detail.onNode) return;
      $("#live-preview").src = e.detail.url;
      $("#live-preview").hidden = false;
    });
    this.execution.addEventListener("start", () => this.panels.refresh());
    this.execution.addEventListener("end", (e) => this.onRunEnd(e.detail));
    // the lists are read when the socket connects and when the queue length changes; the first
    // status after connecting only tells the length the read on connecting already has
    this.execution.addEventListener("queue", ({ detail: { remaining } }) => {
      if (this.remaining !== undefined && remaining !== this.remaining) this.panels.refresh();
      this.remaining = remaining;
    });
    setTimeout(() => { if (!this.api.connected && !this.panels.loaded) this.panels.refresh(); }, 3000); // no socket yet
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

  /** Adds a node to the graph shown. At a graph position (where the user pointed) it is centred
   * there, or `side` "left"/"right" puts that edge there; without one it goes to the first free
   * spot next to the selection, or else in the middle of the view. */
  addNode(type, pos, side = "centre") {
    const graph = this.canvas.graph;
    const node = LiteGraph.createNode(type);
    if (!node) return null;
    if (pos) {
      const dx = { left: 0, right: -node.size[0], centre: -node.size[0] / 2 }[side];
      node.pos = [pos[0] + dx, pos[1] - 20];
    } else {
      node.pos = freeSpot(graph, node.size, this.newNodeAnchor(node));
    }
    graph.add(node);
    this.canvas.selectItems([node]);
    this.changed();
    return node;
  }

  /** Where a node added without a position goes: right of the selection, or the view's middle. */
  newNodeAnchor(node) {
    const selected = this.selectedNodes();
    if (selected.length) {
      const [x, y, w] = createBounds(selected, 0);
      return [x + w + 40, y + LiteGraph.NODE_TITLE_HEIGHT];
    }
    const [cx, cy] = this.viewCentre();
    return [cx - node.size[0] / 2, cy - node.size[1] / 2];
  }

  /** Edits a node's title in place, over its title bar. */
  renameNode(node) {
    const h = LiteGraph.NODE_TITLE_HEIGHT;
    this.inline.edit([node.pos[0], node.pos[1] - h, node.size[0], h], node.title, (title) => {
      if (title.trim()) node.title = title.trim();
      this.changed();
    });
  }

  /** Sets a mode (2 mute, 4 bypass) on a node, or on the selection it belongs to; again restores. */
  setMode(node, mode) {
    const nodes = node.selected ? this.selectedNodes() : [node];
    const next = node.mode === mode ? 0 : mode;
    for (const n of nodes) n.mode = next;
    this.changed();
  }

  setShowIds(on) {
    this.showIds = on;
    localStorage.setItem(IDS_KEY, String(on));
    $("#ids-btn").setAttribute("aria-pressed", String(on));
    this.canvas.setDirty(true, true);
  }

  /** litegraph warns "Pointer cancel!" each time the browser cancels a pointer (a drag from the
   * palette, a touch turned into a scroll); that is expected, so it only resets its pointer. */
  silencePointerCancel() {
    const canvas = this.canvas;
    this.canvasEl.removeEventListener("pointercancel", canvas._mousecancel_callback, true);
    canvas._mousecancel_callback = () => canvas.pointer.reset();
    this.canvasEl.addEventListener("pointercancel", canvas._mousecancel_callback, true);
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
    this.canvas.graph.add(group);
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
    const where = isEditorFormat(data) ? "shown in red, kept when saved" : "left out";
    if (missing.length) this.toast(`Unknown node types (${where}): ${missing.join(", ")}`, "error");
    this.name = name.replace(/\.(json|png)$/i, "");
    this.afterLoad(true);
    if (!quiet) this.toast(`Loaded ${this.name}`);
    return true;
  }

  afterLoad(resetUndo) {
    this.inline.close(false);
    this.subgraphs.back();
    this.errors.clear();
    this.execution.setRunning(null);
    $("#live-preview").hidden = true;
    markUnknownNodes(this.graph);
    if (resetUndo) {
      this.undo.reset();
      this.fitView();
    }
    this.persist();
    document.title = `${this.name} · Loom`;
    // drawn now, not on the next frame: the canvas hit-tests the nodes it drew last, so a click
    // that comes before that frame (on a busy machine) would miss the loaded nodes
    this.canvas.draw(true, true);
  }

  fitView() { this.layout.fitView(this.canvas.graph); }

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
    this.remaining = undefined;
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
    $("#fit-btn").onclick = () => this.fitView();
    $("#ids-btn").onclick = () => this.setShowIds(!this.showIds);
    $("#ids-btn").setAttribute("aria-pressed", String(this.showIds));
    $("#lightbox").addEventListener("click", (e) => { if (e.target.id === "lightbox") e.target.close(); });
    $("#live-preview").onclick = () => { $("#live-preview").hidden = true; };
    renderHelp($("#help .shortcuts"));
    bindShortcuts(this);
    // every pointer or key action may have edited the graph (text fields report their own edits)
    for (const type of ["pointerup", "keyup"]) {
      window.addEventListener(type, (e) => { if (!isTextField(e.target)) setTimeout(() => this.changed(), 0); }, true);
    }
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

const isTextField = (t) => t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));

/** Nodes of types this server lacks: red, titled with their type (litegraph keeps their saved data). */
function markUnknownNodes(graph) {
  for (const node of graph._nodes) {
    if (!node.last_serialization) continue;
    node.title ||= node.type;
    Object.assign(node, { color: "#8f2d2d", bgcolor: "#4d2323", boxcolor: "#ff5a5a" });
  }
}

const app = new App();
window.loom = app; // handy in the console and for the browser tests
app.start();
