// Tooltips on the canvas, from /object_info: a node's description on its title bar, an input's
// tooltip (with its type, and whether it is optional) on its socket or widget, an output's on its
// socket; a node with errors (or a run's warnings, in amber) shows its messages wherever the pointer rests on it.
import { inputsOf } from "./nodes.js";

const DELAY_MS = 450;
const clean = (text) => String(text ?? "").replace(/\s+/g, " ").trim();

function el(tag, className, text) {
  return Object.assign(document.createElement(tag), { className, textContent: text });
}

export class Tooltips {
  constructor({ canvas, tip }) {
    this.canvas = canvas;
    this.tip = tip;
    const target = canvas.canvas;
    target.addEventListener("pointermove", (e) => this.schedule(e));
    for (const type of ["pointerleave", "pointerdown", "wheel", "keydown"]) target.addEventListener(type, () => this.hide(), { passive: true });
  }

  schedule(e) {
    this.hide();
    if (e.buttons) return;
    const { clientX, clientY } = e;
    this.timer = setTimeout(() => this.showAt(clientX, clientY), DELAY_MS);
  }

  hide() {
    clearTimeout(this.timer);
    this.tip.hidden = true;
  }

  showAt(clientX, clientY) {
    const parts = this.describe(this.canvas.convertEventToCanvasOffset({ clientX, clientY }));
    if (!parts) return;
    const [head, kind, body, errors] = parts;
    this.tip.replaceChildren(el("b", "", head), kind ? el("span", "muted", kind) : "", body ? el("span", "", body) : "",
      ...errors.map((m) => el("span", m.startsWith("warning: ") ? "warn" : "err", m)));
    this.tip.hidden = false;
    const box = this.tip.parentElement.getBoundingClientRect();
    const { offsetWidth: w, offsetHeight: h } = this.tip;
    this.tip.style.left = `${Math.min(clientX - box.left + 14, box.width - w - 6)}px`;
    this.tip.style.top = `${clientY - box.top + 18 + h > box.height ? clientY - box.top - h - 10 : clientY - box.top + 18}px`;
  }

  /** What lies under a graph position: [heading, kind, text, error messages], or null. */
  describe([x, y]) {
    const node = this.canvas.graph?.getNodeOnPos(x, y, this.canvas.visible_nodes);
    if (!node) return null;
    const def = node.constructor.loomDef ?? {};
    const errors = [...(node.loom?.errors?.messages ?? []), ...(node.loom?.warnings ?? []).map((m) => `warning: ${m}`)];
    const inputs = Object.fromEntries(inputsOf(def).map((i) => [i.name, i]));
    const slot = node.getSlotInPosition(x, y);
    if (slot?.input) {
      const spec = inputs[slot.input.name];
      return [slot.input.label || slot.input.name, `${slot.input.type}${spec?.optional ? " · optional" : ""}`,
        clean(spec?.opts.tooltip), errors];
    }
    if (slot?.output) {
      return [slot.output.label || slot.output.name, String(slot.output.type), clean(def.output_tooltips?.[slot.slot]), errors];
    }
    const widget = node.getWidgetOnPos(x, y, true);
    const spec = widget && inputs[widget.name];
    if (spec?.opts.tooltip) {
      return [widget.label || widget.name, `${spec.type}${spec.optional ? " · optional" : ""}`, clean(spec.opts.tooltip), errors];
    }
    if (y < node.pos[1] || errors.length) {
      const kind = node.type && node.type !== node.title ? `${node.type} · #${node.id}` : `#${node.id}`;
      return [node.title, kind, clean(node.constructor.description), errors];
    }
    return null;
  }
}
