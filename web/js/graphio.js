// Reading workflows into the graph: the editor format (litegraph 0.4 or version 1, as ComfyUI saves
// them), the API format (laid out in columns), and the default txt2img workflow built from /object_info.
import { LiteGraph } from "./lib.js";
import { inputsOf, isWidgetInput, CONTROL_WIDGET } from "./nodes.js";

export const isEditorFormat = (data) => data && typeof data === "object" && Array.isArray(data.nodes);

export function isApiFormat(data) {
  if (!data || typeof data !== "object" || Array.isArray(data) || isEditorFormat(data)) return false;
  const values = Object.values(data);
  return values.length > 0 && values.every((n) => n && typeof n.class_type === "string");
}

/** Node types a workflow uses that the server does not offer. */
export function missingTypes(data) {
  const types = isEditorFormat(data) ? data.nodes.map((n) => n.type) : Object.values(data).map((n) => n.class_type);
  return [...new Set(types.filter((t) => t && !LiteGraph.registered_node_types[t]))];
}

/** Loads either format into the graph; throws on anything else. */
export function loadWorkflow(graph, data) {
  if (isEditorFormat(data)) {
    graph.configure(structuredClone(data));
  } else if (isApiFormat(data)) {
    graph.clear();
    buildFromApi(graph, data);
  } else {
    throw new Error("this is not a workflow (neither the editor format with a 'nodes' list nor the API format)");
  }
}

function setWidgetValues(node, values) {
  for (const w of node.widgets ?? []) {
    if (w.name in values && !Array.isArray(values[w.name])) w.value = values[w.name];
  }
}

/** Lays an API-format prompt out as columns by depth and wires its links. */
function buildFromApi(graph, prompt) {
  const nodes = {};
  for (const [id, spec] of Object.entries(prompt)) {
    const node = LiteGraph.createNode(spec.class_type);
    if (!node) continue;
    if (spec._meta?.title) node.title = spec._meta.title;
    setWidgetValues(node, spec.inputs ?? {});
    graph.add(node);
    nodes[id] = node;
  }
  const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[1] === "number";
  const depth = {};
  const depthOf = (id, seen = new Set()) => {
    if (id in depth) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const links = Object.values(prompt[id]?.inputs ?? {}).filter(isLink);
    depth[id] = links.length ? 1 + Math.max(...links.map(([src]) => depthOf(String(src), seen))) : 0;
    return depth[id];
  };
  for (const [id, spec] of Object.entries(prompt)) {
    const target = nodes[id];
    if (!target) continue;
    for (const [name, value] of Object.entries(spec.inputs ?? {})) {
      const source = isLink(value) && nodes[String(value[0])];
      const slot = target.findInputSlot(name);
      if (source && slot >= 0) source.connect(value[1], target, slot);
    }
  }
  layoutColumns(Object.keys(nodes).map((id) => [nodes[id], depthOf(id)]));
}

/** Places [node, column] pairs in columns, stacked top to bottom. */
export function layoutColumns(placed, x0 = 40, y0 = 60) {
  const heights = {};
  let x = x0;
  const columns = [...new Set(placed.map(([, c]) => c))].sort((a, b) => a - b);
  for (const col of columns) {
    const inCol = placed.filter(([, c]) => c === col).map(([n]) => n);
    const width = Math.max(...inCol.map((n) => n.size[0]));
    for (const node of inCol) {
      heights[col] ??= y0;
      node.pos = [x, heights[col]];
      heights[col] += node.size[1] + 70;
    }
    x += width + 60;
  }
}

/** The free spot nearest to `at` (a node's top-left) for a node of `size`: no overlap with another
 * node, its title bar included, searched outward on a grid. */
export function freeSpot(graph, size, at, gap = 24, step = 30) {
  const title = LiteGraph.NODE_TITLE_HEIGHT;
  const rects = graph._nodes.map((n) => n.boundingRect);
  const free = ([x, y]) => !rects.some(([rx, ry, rw, rh]) =>
    x < rx + rw + gap && rx < x + size[0] + gap && y - title < ry + rh + gap && ry < y + size[1] + gap);
  const spots = [];
  for (let i = -20; i <= 20; i++) for (let j = -20; j <= 20; j++) spots.push([at[0] + i * step, at[1] + j * step]);
  const dist = ([x, y]) => Math.hypot(x - at[0], (y - at[1]) * 1.5); // prefer beside over above or below
  return spots.filter(free).sort((a, b) => dist(a) - dist(b))[0] ?? [...at];
}

// The default txt2img graph, by node type: each socket input is wired from the first listed source
// with an output of its type (two inputs of one type take two different sources, in order).
const DEFAULT_GRAPH = [
  { key: "ckpt", type: "LoadCheckpoint", col: 0, from: [] },
  // what the built-in shapes64 draws; its unconditional prompt (for guidance) is the empty one
  { key: "pos", type: "Tokenize", col: 1, from: ["ckpt"], text: "a blue ring on a black background" },
  { key: "neg", type: "Tokenize", col: 1, from: ["ckpt"], text: "" },
  { key: "sched", type: "SetScheduler", col: 1, from: ["ckpt"] },
  // the built-in models are made for 64x64 images (as workflows/shapes.json); 512 would take minutes on a CPU
  { key: "noise", type: "MakeNoiseLatents", col: 1, from: ["ckpt"], values: { width: 64, height: 64 } },
  { key: "encpos", type: "EncodeText", col: 2, from: ["pos", "ckpt"] },
  { key: "encneg", type: "EncodeText", col: 2, from: ["neg", "ckpt"] },
  { key: "sample", type: "Sample", col: 3, from: ["sched", "encpos", "encneg", "noise", "ckpt"] },
  { key: "decode", type: "VAEDecode", col: 3, from: ["sample", "ckpt"] },
  { key: "save", type: "SaveImage", col: 3, from: ["decode"] },
];
const DEFAULT_MODELS = ["shapes64", "tiny-sd"]; // the trained built-in model first, else the random one

/** Builds the default txt2img graph; returns the node types the server lacks. */
export function buildDefaultWorkflow(graph, objectInfo) {
  graph.clear();
  const missing = DEFAULT_GRAPH.filter((s) => !objectInfo[s.type]).map((s) => s.type);
  const made = {};
  for (const spec of DEFAULT_GRAPH) {
    if (!objectInfo[spec.type]) continue;
    const node = LiteGraph.createNode(spec.type);
    graph.add(node);
    made[spec.key] = node;
    const widgets = node.widgets ?? [];
    const text = widgets.find((w) => ["customtext", "text", "string"].includes(w.type));
    if (text && spec.text !== undefined) text.value = spec.text;
    const model = widgets.find((w) => w.type === "combo" && DEFAULT_MODELS.some((m) => w.options.values.includes(m)));
    if (model) model.value = DEFAULT_MODELS.find((m) => model.options.values.includes(m));
    for (const w of widgets) if (spec.values && w.name in spec.values) w.value = spec.values[w.name];
    const seedControl = widgets.find((w) => w.name === CONTROL_WIDGET);
    if (seedControl) seedControl.value = "randomize";
    wireDefault(node, spec, made, objectInfo[spec.type]);
  }
  layoutColumns(DEFAULT_GRAPH.filter((s) => made[s.key]).map((s) => [made[s.key], s.col]));
  return missing;
}

function wireDefault(node, spec, made, def) {
  const used = new Set();
  for (const input of inputsOf(def).filter((i) => !isWidgetInput(i))) {
    for (const key of spec.from) {
      const source = made[key];
      const slot = source?.outputs?.findIndex((o) => o.type === input.type) ?? -1;
      if (slot < 0 || used.has(`${key}:${input.type}`)) continue;
      used.add(`${key}:${input.type}`);
      source.connect(slot, node, node.findInputSlot(input.name));
      break;
    }
  }
}
