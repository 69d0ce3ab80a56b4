// The canvas's context menus: litegraph's entries, less those that do nothing in this editor (the
// always-disabled Inputs and Outputs, Properties and its panel, the event-driven modes Loom does not
// run), plus Rename in place, Bypass and Mute, subgraphs, fitting the view and the node ids. A
// group's Remove removes that group (litegraph's deletes whatever is selected instead).
import { LGraphGroup } from "./lib.js";

const DROPPED = new Set(["Inputs", "Outputs", "Properties", "Properties Panel", "Title", "Mode", "Convert to Subgraph 🆕"]);

/** Drops leading, trailing and doubled separators (null entries). */
function tidy(options) {
  const out = [];
  for (const o of options) if (o || (out.length && out.at(-1))) out.push(o);
  while (out.length && !out.at(-1)) out.pop();
  return out;
}

export function installMenus(app) {
  const canvas = app.canvas;
  const nodeOptions = canvas.getNodeMenuOptions.bind(canvas);
  const canvasOptions = canvas.getCanvasMenuOptions.bind(canvas);
  const several = () => Object.keys(canvas.selected_nodes ?? {}).length > 1;
  const check = (on, label) => `${on ? "✓ " : ""}${label}`;

  canvas.getNodeMenuOptions = (node) => tidy([
    node.subgraph ? { content: "Open subgraph", callback: () => app.subgraphs.open(node.subgraph) } : null,
    { content: "Rename", callback: () => app.renameNode(node) },
    { content: check(node.mode === 4, "Bypass"), callback: () => app.setMode(node, 4) },
    { content: check(node.mode === 2, "Mute"), callback: () => app.setMode(node, 2) },
    { content: "Convert to Subgraph", callback: () => app.subgraphs.convert() },
    null,
    ...nodeOptions(node).filter((o) => !o || !DROPPED.has(o.content)),
  ]);

  const groupOptions = LGraphGroup.prototype.getMenuOptions;
  LGraphGroup.prototype.getMenuOptions = function () {
    return groupOptions.call(this).map((o) => (o?.content !== "Remove" ? o : {
      content: "Remove", callback: () => { this.graph?.remove(this); app.changed(); },
    }));
  };

  canvas.getCanvasMenuOptions = () => tidy([
    ...canvasOptions().filter((o) => !o || !DROPPED.has(o.content)),
    several() ? { content: "Convert to Subgraph", callback: () => app.subgraphs.convert() } : null,
    null,
    { content: "Fit view", callback: () => app.fitView() },
    { content: check(app.showIds, "Show node ids"), callback: () => app.setShowIds(!app.showIds) },
  ]);
}
