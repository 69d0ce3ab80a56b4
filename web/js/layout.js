// The page layout: the side panels (the node list on the left, the runs on the right) shown or
// hidden and remembered for the next visit, the canvas sized to the room they leave, and fitting
// the view so that titles and widgets stay drawn.
import { LiteGraph, createBounds } from "./lib.js";

const KEY = "loom.layout";
/** Below this zoom litegraph draws nodes as blank boxes (its low-quality mode); fitting never goes
 * below it: a graph too big to fit readably shows its top-left part, where a flow starts. */
export const MIN_READABLE_SCALE = 0.35;
/** A first visit on a window narrower than this starts with the run panel hidden: the default graph
 * then fits at about 80 % at 1280x800 instead of 48 %. */
const WIDE = 1400;

export class Layout {
  constructor({ canvas, canvasEl, wrap }) {
    this.canvas = canvas;
    this.canvasEl = canvasEl;
    this.wrap = wrap;
    canvas.low_quality_zoom_threshold = MIN_READABLE_SCALE;
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch { /* start from the defaults */ }
    this.open = { palette: saved.palette ?? true, sidebar: saved.sidebar ?? window.innerWidth >= WIDE };
    for (const btn of document.querySelectorAll("button[data-panel]")) {
      btn.addEventListener("click", () => this.toggle(btn.dataset.panel));
    }
    for (const name of Object.keys(this.open)) this.apply(name);
    this.fitCanvas();
    new ResizeObserver(() => this.fitCanvas()).observe(wrap);
  }

  /** Shows or hides a panel ("palette" or "sidebar"); the graph stays where it was on the screen. */
  toggle(name, open = !this.open[name]) {
    const before = this.wrap.getBoundingClientRect().left;
    this.open[name] = open;
    this.apply(name);
    try { localStorage.setItem(KEY, JSON.stringify(this.open)); } catch { /* not remembered */ }
    const moved = this.wrap.getBoundingClientRect().left - before;
    this.canvas.ds.offset[0] -= moved / this.canvas.ds.scale;
    this.fitCanvas();
  }

  apply(name) {
    document.getElementById(name).classList.toggle("collapsed", !this.open[name]);
    document.querySelector(`button[data-panel=${name}]`)?.setAttribute("aria-pressed", String(this.open[name]));
  }

  /** Sizes the canvas bitmap to its box (in device pixels). */
  fitCanvas() {
    const scale = Math.max(window.devicePixelRatio, 1);
    const { clientWidth: w, clientHeight: h } = this.wrap;
    if (!w || !h) return;
    if (this.canvasEl.width === Math.round(w * scale) && this.canvasEl.height === Math.round(h * scale)) return;
    this.canvasEl.width = Math.round(w * scale);
    this.canvasEl.height = Math.round(h * scale);
    this.canvasEl.style.width = `${w}px`;
    this.canvasEl.style.height = `${h}px`;
    this.canvasEl.getContext("2d").scale(scale, scale);
    this.canvas.setDirty(true, true);
  }

  /** Fits the graph (the one shown: the root or an opened subgraph) in view, never zooming in past
   * 100 % nor out past the readable zoom. */
  fitView(graph = this.canvas.graph) {
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const rects = [
      ...graph._nodes.map((n) => [n.pos[0], n.pos[1] - title, n.size[0], n.size[1] + title]),
      ...graph._groups.map((g) => [g.pos[0], g.pos[1], g.size[0], g.size[1]]),
    ];
    if (!rects.length) return;
    const [x, y, w, h] = createBounds(rects.map((boundingRect) => ({ boundingRect })), 30);
    const { clientWidth: cw, clientHeight: ch } = this.canvasEl;
    const ds = this.canvas.ds;
    ds.scale = Math.max(MIN_READABLE_SCALE, Math.min(1, 0.95 * cw / w, 0.95 * ch / h));
    const left = w * ds.scale <= cw ? (cw / ds.scale - w) / 2 : 10 / ds.scale;
    const top = h * ds.scale <= ch ? (ch / ds.scale - h) / 2 : 10 / ds.scale;
    ds.offset[0] = left - x;
    ds.offset[1] = top - y;
    this.canvas.setDirty(true, true);
  }
}
