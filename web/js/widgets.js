// Text typed on the node. A multi-line STRING input is a real <textarea> laid over its node (as
// ComfyUI does): it follows the node while the canvas pans and zooms, and the canvas draws its text
// whenever the field cannot be shown (zoomed far out, collapsed, under another node). Single-line
// values (text and numbers) are edited in place: an <input> over the widget, Enter keeps the value,
// Escape drops it, clicking elsewhere keeps it.
import { LiteGraph, BaseWidget } from "./lib.js";

const MARGIN = 15;
const TYPING_PAUSE_MS = 400; // one undo step per burst of typing, not per key

/** The screen rectangle (CSS pixels, relative to the canvas) of a graph-space rectangle. */
function toScreen(canvas, [x, y, w, h]) {
  const [sx, sy] = canvas.ds.convertOffsetToCanvas([x, y]);
  return { left: sx, top: sy, scale: canvas.ds.scale, width: w, height: h };
}

function place(el, { left, top, scale, width, height }) {
  Object.assign(el.style, {
    left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px`, transform: `scale(${scale})`,
  });
}

const overlaps = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];

/** Keeps the DOM fields of the canvas's nodes in place: each frame the canvas draws, the widgets it
 * drew are shown at their node, the others hidden; fields of removed nodes are dropped. */
export class DomWidgets {
  constructor(canvas, layer) {
    this.canvas = canvas;
    this.layer = layer;
    this.widgets = new Set();
    this.drawn = new Set();
    const overlay = canvas.onDrawOverlay;
    canvas.onDrawOverlay = (ctx) => {
      overlay?.call(canvas, ctx);
      this.endFrame();
    };
  }

  add(widget) {
    this.widgets.add(widget);
    this.layer.append(widget.element);
  }

  endFrame() {
    const visible = this.canvas.visible_nodes ?? [];
    for (const widget of this.widgets) {
      const node = widget.node;
      if (!node.graph || node.graph.getNodeById(node.id) !== node) {
        widget.element.remove();
        this.widgets.delete(widget);
        continue;
      }
      const rect = this.drawn.has(widget) && widget.rect();
      // a node drawn later (on top) hides the field; the canvas shows its text instead
      const covered = rect && visible.slice(visible.indexOf(node) + 1).some((n) => overlaps(n.boundingRect, rect));
      const show = rect && !covered;
      if (show) place(widget.element, toScreen(this.canvas, rect));
      if (widget.shown !== show) {
        widget.element.hidden = !show;
        widget.shown = show;
        if (!show && document.activeElement === widget.element) widget.element.blur();
      }
    }
    this.drawn.clear();
  }
}

/** A multi-line STRING input as a textarea on the node; it takes the room the node gives it. */
export class TextAreaWidget extends BaseWidget {
  constructor({ name, value = "", callback, placeholder = "" }, node, host) {
    super({ type: "customtext", name, value, options: { multiline: true }, callback }, node);
    this.host = host;
    this.shown = false;
    const el = Object.assign(document.createElement("textarea"), { value: this.value, placeholder, spellcheck: false, hidden: true });
    el.dataset.widget = name;
    let pause = null;
    const commit = () => {
      clearTimeout(pause);
      pause = null;
      this.callback?.(this.value);
    };
    el.addEventListener("input", () => {
      this.value = el.value;
      node.setDirtyCanvas(true, false);
      clearTimeout(pause);
      pause = setTimeout(commit, TYPING_PAUSE_MS);
    });
    el.addEventListener("change", commit);
    el.addEventListener("keydown", (e) => {
      if (e.key === "Escape") el.blur();
      e.stopPropagation(); // keys typed here are text, not canvas shortcuts (Ctrl+Enter still queues: see shortcuts.js)
    });
    el.addEventListener("wheel", (e) => {
      // a field with nothing to scroll passes the wheel on, so zooming works over it
      if (el.scrollHeight <= el.clientHeight || e.ctrlKey) {
        e.preventDefault();
        host.canvas.processMouseWheel(e);
      }
    }, { passive: false });
    el.addEventListener("pointerdown", () => host.canvas.selectItems([node]));
    this.element = el;
    host.dom.add(this);
  }

  get height() { return this.computedHeight ?? 60; }

  computeLayoutSize() {
    return { minHeight: 56, maxHeight: 1e6, minWidth: 120 };
  }

  /** The field's rectangle in graph space. */
  rect() {
    const node = this.node;
    return [node.pos[0] + MARGIN, node.pos[1] + this.y, node.size[0] - 2 * MARGIN, this.height - 4];
  }

  drawWidget(ctx, { width, showText = true }) {
    const h = this.height - 4;
    const { fillStyle, strokeStyle, textAlign, font } = ctx;
    ctx.fillStyle = LiteGraph.WIDGET_BGCOLOR;
    ctx.strokeStyle = LiteGraph.WIDGET_OUTLINE_COLOR;
    ctx.beginPath();
    ctx.roundRect(MARGIN, this.y, width - MARGIN * 2, h, 6);
    ctx.fill();
    if (showText) {
      ctx.stroke();
      // what the field shows when it cannot be laid over the node
      ctx.textAlign = "left";
      ctx.fillStyle = LiteGraph.WIDGET_TEXT_COLOR;
      ctx.font = "12px system-ui, sans-serif";
      const lines = Math.max(1, Math.floor((h - 8) / 16));
      wrapLines(ctx, String(this.value ?? ""), width - MARGIN * 2 - 14, lines)
        .forEach((line, i) => ctx.fillText(line, MARGIN + 7, this.y + 17 + i * 16));
      this.host.dom.drawn.add(this);
    }
    if (this.element.value !== this.value && document.activeElement !== this.element) this.element.value = this.value ?? "";
    this.element.dataset.node = String(this.node.id); // ids are given when a node joins a graph
    Object.assign(ctx, { fillStyle, strokeStyle, textAlign, font });
  }

  onClick() { this.element.focus(); }
}

/** Breaks text into lines of at most maxWidth; the last kept line ends with … when text is cut. */
export function wrapLines(ctx, text, maxWidth, maxLines) {
  const lines = [];
  for (const para of text.split("\n")) {
    let line = "";
    for (const word of para.split(" ")) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > maxWidth && line) {
        lines.push(line);
        line = word;
      } else line = next;
    }
    lines.push(line);
  }
  if (lines.length > maxLines) return [...lines.slice(0, maxLines - 1), lines[maxLines - 1] + " …"];
  return lines;
}

const NUMBER = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i;
const ARITHMETIC = /^[\d\s.()*+/-]+$/;

/** Edits a value in place of litegraph's prompt dialog: an input over the widget (or over the
 * title bar, or at the pointer), Enter or a click elsewhere keeps it, Escape drops it. */
export class InlineEditor {
  constructor(canvas, layer) {
    this.canvas = canvas;
    this.layer = layer;
    this.input = null;
    canvas.prompt = (title, value, callback, event) => this.promptAt(event, value, callback);
  }

  /** litegraph's prompt(title, value, callback, event): finds the widget under the event. */
  promptAt(event, value, callback) {
    const canvas = this.canvas;
    const x = event?.canvasX, y = event?.canvasY;
    const node = x == null ? null : canvas.graph.getNodeOnPos(x, y, canvas.visible_nodes);
    const widget = node?.getWidgetOnPos(x, y, true);
    let rect;
    if (widget) {
      rect = [node.pos[0] + MARGIN, node.pos[1] + widget.y, node.size[0] - 2 * MARGIN, LiteGraph.NODE_WIDGET_HEIGHT];
    } else {
      rect = [x ?? 0, y ?? 0, 200, LiteGraph.NODE_WIDGET_HEIGHT];
    }
    const numeric = widget?.type === "number";
    this.edit(rect, value, (text) => {
      if (!numeric) return callback(text);
      // litegraph evaluates arithmetic it is given; anything else is not a number and is dropped
      if (NUMBER.test(text) || ARITHMETIC.test(text)) callback(text.trim());
    });
  }

  /** Shows the input over a graph-space rectangle; `done(text)` is called when it is kept. */
  edit(rect, value, done) {
    this.close(false);
    const input = Object.assign(document.createElement("input"), { className: "inline-edit", value: String(value ?? "") });
    this.input = input;
    let finished = false;
    const finish = (keep) => {
      if (finished) return;
      finished = true;
      this.input = null;
      input.remove();
      if (keep) done(input.value);
      this.canvas.setDirty(true, true);
      this.canvas.canvas.focus();
    };
    this.finish = finish;
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
      else if (e.key === "Tab") finish(true);
      else {
        e.stopPropagation();
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    });
    input.addEventListener("blur", () => finish(true));
    place(input, toScreen(this.canvas, rect));
    this.layer.append(input);
    input.focus();
    input.select();
  }

  close(keep) { if (this.input) this.finish(keep); }
}
