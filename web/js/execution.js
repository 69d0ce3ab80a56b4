// Follows a run from the socket: which node runs, its step progress, the overall progress, latent
// previews and output images; draws them on the graph's nodes and in the top progress bar.

import { UI_ONLY_TYPES, runState } from "./nodes.js";

const OUTCOMES = new Set(["done", "failed", "interrupted"]);

export class Execution extends EventTarget {
  constructor({ api, graph, bar, label }) {
    super();
    this.api = api;
    this.graph = graph;
    this.bar = bar;
    this.label = label;
    this.promptId = null;
    this.prompts = new Map(); // prompt_id -> {total: node count} for prompts this tab queued
    this.done = new Set();
    this.runningNode = null;
    this.step = 0;
    for (const type of ["execution_start", "execution_cached", "executing", "progress", "executed",
      "execution_success", "execution_error", "execution_interrupted", "preview", "status"]) {
      api.addEventListener(type, (e) => this[`on_${type}`](e.detail));
    }
  }

  /** Remembers a prompt we queued so its overall progress can be computed. */
  track(promptId, workflow) {
    const runnable = workflow.nodes.filter((n) => n.mode !== 2 && n.mode !== 4 && !UI_ONLY_TYPES.has(n.type)).length;
    this.prompts.set(promptId, { total: Math.max(runnable, 1) });
    if (promptId === this.promptId) this.update();
  }

  /** The node of an id from the server; a node inside a subgraph ("5:3") shows on its subgraph node (5). */
  node(id) {
    if (id == null) return null;
    const outer = String(id).split(":")[0];
    return this.graph.getNodeById(Number(outer)) ?? this.graph.getNodeById(outer);
  }

  setRunning(id) {
    const prev = this.node(this.runningNode);
    if (prev) {
      runState(prev).running = false;
      prev.progress = undefined;
    }
    this.runningNode = id;
    this.step = 0;
    const node = this.node(id);
    if (node) runState(node).running = true;
    this.graph.setDirtyCanvas(true, false);
  }

  on_status(data) {
    const remaining = data?.status?.exec_info?.queue_remaining;
    if (remaining !== undefined) this.emit("queue", { remaining });
  }

  on_execution_start(data) {
    this.promptId = data.prompt_id;
    this.outcome = "done";
    this.done = new Set();
    this.clearPreviews();
    this.update();
    this.emit("start", data);
  }

  on_execution_cached(data) {
    for (const id of data.nodes ?? []) this.done.add(String(id));
    this.update();
  }

  on_executing(data) {
    if (this.runningNode != null) this.done.add(String(this.runningNode));
    const node = this.node(data.node);
    if (node) runState(node).warnings = null; // it runs again: its warnings come anew with "executed"
    this.setRunning(data.node);
    if (data.node == null) this.finish();
    else this.update();
  }

  on_progress(data) {
    const node = this.node(data.node ?? this.runningNode);
    this.step = data.max ? data.value / data.max : 0;
    if (node) node.progress = this.step;
    this.update(`step ${data.value}/${data.max}`);
    this.graph.setDirtyCanvas(true, false);
  }

  /** A latent preview frame: drawn in the running node's own content area when it has one, and
   * announced (`preview`, with onNode) so the page can show it elsewhere when it has not. */
  on_preview({ blob }) {
    const node = this.node(this.runningNode); // frames come before the next "executing" on the socket
    const promptId = this.promptId;
    const img = new Image();
    const url = URL.createObjectURL(blob);
    img.onload = () => {
      if (!node || !promptId || promptId !== this.promptId) return URL.revokeObjectURL(url); // the run ended
      const state = runState(node);
      if (state.preview?.src?.startsWith("blob:")) URL.revokeObjectURL(state.preview.src);
      state.preview = img;
      this.emit("preview", { img, url, onNode: Boolean(node.hasContentArea?.()) });
      this.graph.setDirtyCanvas(true, false);
    };
    img.src = url;
  }

  clearPreviews() {
    for (const node of this.graph._nodes) {
      if (node.loom?.preview) node.loom.preview = null;
    }
    this.graph.setDirtyCanvas(true, false);
  }

  on_executed(data) {
    // ImageCompare (ComfyUI's) sends its two sides as a_images and b_images: shown side by side
    const compare = [...(data.output?.a_images ?? []).slice(0, 1), ...(data.output?.b_images ?? []).slice(0, 1)];
    const images = data.output?.images ?? compare;
    this.done.add(String(data.node));
    const node = this.node(data.node);
    if (node && images.length) this.showImages(node, images);
    if (node) runState(node).compare = !data.output?.images && compare.length === 2;
    if (node && data.output?.text) this.showText(node, data.output.text);
    if (node && data.output?.warnings?.length) runState(node).warnings = data.output.warnings.map(String);
    this.emit("images", { node: data.node, images, promptId: data.prompt_id });
    this.update();
  }

  showImages(node, images) {
    runState(node).images = images.map((ref) => {
      const img = new Image();
      img.onload = () => this.graph.setDirtyCanvas(true, false);
      img.src = this.api.viewUrl(ref);
      img.dataset.ref = JSON.stringify(ref);
      return img;
    });
    runState(node).imageIndex = 0;
  }

  /** Text outputs (ComfyUI's `text` key: token tables, tensor info) drawn in the node's content area. */
  showText(node, text) {
    runState(node).text = text.map(String).join("\n").split("\n");
    this.graph.setDirtyCanvas(true, false);
  }

  on_execution_success(data) {
    this.clearPreviews();
    this.emit("end", { ...data, status: "success" });
  }

  on_execution_error(data) { this.stop("failed", { ...data, status: "error" }); }

  on_execution_interrupted(data) { this.stop("interrupted", { ...data, status: "interrupted" }); }

  /** A run that ended early: no node runs, and frames still in flight are not shown. */
  stop(outcome, detail) {
    this.setRunning(null);
    this.clearPreviews();
    this.outcome = outcome;
    this.update(outcome);
    this.promptId = null;
    this.emit("end", detail);
  }

  finish() {
    this.update(this.outcome ?? "done");
    this.promptId = null;
  }

  update(detail = "") {
    const info = this.prompts.get(this.promptId);
    let fraction = 0;
    let text = "idle";
    if (this.promptId && info) {
      const done = Math.min(this.done.size, info.total);
      // nodes that no output needs are never run: a finished prompt is 100 %
      fraction = detail === "done" ? 1 : Math.min(1, (done + (this.runningNode != null ? this.step : 0)) / info.total);
      text = `${done}/${info.total} nodes${detail ? ` · ${detail}` : ""}`;
    } else if (this.promptId && !OUTCOMES.has(detail)) {
      // not (yet) known as ours: the socket may announce a prompt before /prompt has answered
      text = `running${detail ? ` · ${detail}` : ""}`;
    } else if (detail) {
      fraction = detail === "done" ? 1 : 0;
      text = detail;
    }
    this.bar.style.width = `${Math.round(fraction * 100)}%`;
    this.bar.parentElement.dataset.state = this.promptId ? "running" : "idle";
    this.label.textContent = text;
  }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
