// Node types built from /object_info: typed sockets with a colour per type (optional ones hollow),
// widgets for the constant inputs, the seed's control_after_generate companion, and the drawing of
// run state on each node: running outline, step progress, images and text inside the node's own
// content area (nodes never grow to show them), errors as marks inside the node, the node id.
import { LiteGraph, LGraphNode, LGraphCanvas, SlotShape } from "./lib.js";
import { TextAreaWidget } from "./widgets.js";

export const SEED_CONTROLS = ["fixed", "increment", "decrement", "randomize"];
export const CONTROL_WIDGET = "control_after_generate";
const DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3", AUTOGROW = "COMFY_AUTOGROW_V3";  // ComfyUI's dynamic inputs
const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO]);
const TYPE_COLOURS = {
  TOKENIZER: "#c38fff", TEXT_ENCODER: "#ff7eb6", UNET: "#a393eb", VAE: "#ff6e6e", SCHEDULER: "#5cc8ff",
  TOKENS: "#ffd166", CONDITIONING: "#ffa931", LATENT: "#ff9cf9", IMAGE: "#64b5f6", CLASS_MODEL: "#9ccc65",
  INT: "#7ec699", FLOAT: "#aad576", STRING: "#e6e6a0", BOOLEAN: "#d7a86e",
};

/** A stable colour per socket type; unknown types get one from a hash of their name. */
export function typeColour(type) {
  if (TYPE_COLOURS[type]) return TYPE_COLOURS[type];
  let h = 0;
  for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${h} 60% 65%)`;
}

/** The inputs of a definition in declaration order, each as {name, type, opts, choices, optional}. */
export function inputsOf(def) {
  const out = [];
  for (const group of ["required", "optional"]) {
    const entries = def.input?.[group] ?? {};
    const order = def.input_order?.[group] ?? Object.keys(entries);
    for (const name of order) {
      const spec = entries[name];
      if (!spec) continue;
      const [head, opts = {}] = Array.isArray(spec) ? spec : [spec];
      if (Array.isArray(head)) out.push({ name, type: "COMBO", opts, choices: head, optional: group === "optional" });
      else if (head === "COMBO") out.push({ name, type: "COMBO", opts, choices: opts.options ?? [], optional: group === "optional" });
      else if (head === DYNAMIC_COMBO) out.push({ name, type: head, opts, choices: (opts.options ?? []).map((o) => o.key), optional: group === "optional" });
      else out.push({ name, type: head, opts, optional: group === "optional" });
    }
  }
  return out;
}

export const isWidgetInput = (input) => WIDGET_TYPES.has(input.type);

function decimals(step) {
  const s = String(step ?? 0.01);
  return s.includes("e-") ? Number(s.split("e-")[1]) : (s.split(".")[1] ?? "").length;
}

function addWidgetFor(node, input, hooks) {
  const { name, type, opts } = input;
  const changed = () => hooks.onChange?.();
  if (type === "INT" || type === "FLOAT") {
    const isInt = type === "INT";
    const step = opts.step ?? (isInt ? 1 : 0.01);
    const clamp = (v) => {
      let x = isInt ? Math.round(v) : v;
      if (isInt && step > 1) x = (opts.min ?? 0) + Math.round((x - (opts.min ?? 0)) / step) * step; // widths in steps of 8
      if (!isInt && opts.round) x = Math.round(x / opts.round) * opts.round;
      if (opts.min != null) x = Math.max(opts.min, x);
      if (opts.max != null) x = Math.min(opts.max, x);
      return isInt ? x : Number(x.toFixed(Math.max(decimals(step), 2)));
    };
    const w = node.addWidget("number", name, opts.default ?? 0, function (v) {
      this.value = clamp(Number(v));
      changed();
    }, { min: opts.min, max: opts.max, step: step * 10, step2: step, precision: isInt ? 0 : Math.max(decimals(step), 2) });
    if (isInt && opts.control_after_generate) {
      node.addWidget("combo", CONTROL_WIDGET, "randomize", changed, { values: SEED_CONTROLS });
      w.seedControl = true;
    }
    return w;
  }
  if (type === "BOOLEAN") return node.addWidget("toggle", name, opts.default ?? false, changed, {});
  if (type === DYNAMIC_COMBO) {
    const values = input.choices.length ? input.choices : [""];
    const w = node.addWidget("combo", name, values.includes(opts.default) ? opts.default : values[0], function () {
      showOption(node, this, hooks);
      changed();
    }, { values });
    w.dynamicOptions = opts.options ?? [];
    showOption(node, w, hooks);
    return w;
  }
  if (type === "COMBO") {
    const values = input.choices.length ? input.choices : [""];
    const onPick = opts.image_upload ? function () { showInputImage(node, this, hooks); changed(); } : changed;
    const w = node.addWidget("combo", name, values.includes(opts.default) ? opts.default : values[0], onPick, { values });
    w.imageUpload = Boolean(opts.image_upload);
    return w;
  }
  if (opts.multiline) {
    return node.addCustomWidget(new TextAreaWidget({ name, value: opts.default ?? "", callback: changed }, node, hooks));
  }
  return node.addWidget("text", name, opts.default ?? "", changed, {});
}

/** A dynamic combo's chosen option: its widgets right after the combo, named `<combo>.<input>` as in
 * ComfyUI's API prompts (so widgets_values stay positional), its sockets as inputs; the previous
 * option's widgets and unlinked sockets go. */
function showOption(node, combo, hooks) {
  const prefix = `${combo.name}.`;
  node.widgets = node.widgets.filter((w) => !w.name.startsWith(prefix));
  for (let i = (node.inputs?.length ?? 0) - 1; i >= 0; i--) {
    if (node.inputs[i].name.startsWith(prefix) && node.inputs[i].link == null) node.removeInput(i);
  }
  const option = combo.dynamicOptions.find((o) => o.key === combo.value);
  const before = node.widgets.length;
  for (const input of inputsOf({ input: option?.inputs ?? {} })) {
    const full = { ...input, name: prefix + input.name };
    if (isWidgetInput(full)) addWidgetFor(node, full, hooks);
    else if (!node.inputs?.some((i) => i.name === full.name)) node.addInput(full.name, full.type);
  }
  const added = node.widgets.splice(before);
  node.widgets.splice(node.widgets.indexOf(combo) + 1, 0, ...added);
  if (node.graph) node.setSize([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
}

/** Re-creates the option widgets a saved node's widgets_values hold, before litegraph assigns them by
 * position: each dynamic combo takes its saved value first. */
function showSavedOptions(node, values, hooks) {
  if (!Array.isArray(values)) return;
  for (let i = 0; i < node.widgets.length && i < values.length; i++) {
    const w = node.widgets[i];
    if (w.dynamicOptions && w.value !== values[i] && w.options.values.includes(values[i])) {
      w.value = values[i];
      showOption(node, w, hooks);
    }
  }
}

/** Growing sockets (ComfyUI's Autogrow): `<name>.<prefix>0` ..., the first `min` and one spare. */
function addGrowingInputs(node, input) {
  const t = input.opts.template ?? {};
  const type = Object.values(t.input?.required ?? t.input?.optional ?? {})[0]?.[0] ?? "*";
  node.growing ??= [];
  node.growing.push({ prefix: `${input.name}.${t.prefix ?? ""}`, type, min: t.min ?? 1, max: t.max ?? 10 });
  for (let i = 0; i <= (t.min ?? 1) && i < (t.max ?? 10); i++) {
    node.addInput(`${input.name}.${t.prefix ?? ""}${i}`, type, i < (t.min ?? 1) ? {} : { shape: SlotShape.HollowCircle, optional: true });
  }
}

/** Adds a spare growing socket once every one of a group is linked. */
function growInputs(node) {
  for (const g of node.growing ?? []) {
    const slots = (node.inputs ?? []).filter((i) => i.name.startsWith(g.prefix));
    if (slots.length < g.max && slots.every((i) => i.link != null)) {
      node.addInput(`${g.prefix}${slots.length}`, g.type, { shape: SlotShape.HollowCircle, optional: true });
    }
  }
}

/** Shows the input image a LoadImage-like combo names on its node. */
function showInputImage(node, combo, hooks) {
  const value = String(combo.value ?? "");
  const cut = value.lastIndexOf("/");
  const ref = { filename: value.slice(cut + 1), subfolder: cut < 0 ? "" : value.slice(0, cut), type: "input" };
  if (!ref.filename) {
    runState(node).images = [];
    return;
  }
  const img = new Image();
  img.onload = () => node.setDirtyCanvas(true, false);
  img.src = hooks.viewUrl(ref);
  img.dataset.ref = JSON.stringify(ref);
  runState(node).images = [img];
}

function addUploadButton(node, combo, hooks) {
  const button = node.addWidget("button", "upload image", null, () => {
    const picker = Object.assign(document.createElement("input"), { type: "file", accept: "image/*" });
    picker.onchange = async () => {
      const file = picker.files?.[0];
      if (!file) return;
      const name = await hooks.upload(file);
      if (name && !combo.options.values.includes(name)) combo.options.values.push(name);
      if (name) combo.value = name;
      showInputImage(node, combo, hooks);
      hooks.onChange?.();
    };
    picker.click();
  }, {});
  button.serialize = false;
}

/** The y (node space) where the content area (images, text) starts: below the last widget or slot. */
function contentBottom(node) {
  const last = node.widgets?.at(-1);
  if (last) return last.y + (last.computedHeight ?? LiteGraph.NODE_WIDGET_HEIGHT + 4);
  const slots = Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0);
  return slots * LiteGraph.NODE_SLOT_HEIGHT + 6;
}

const CONTENT_HEIGHT = 220, MIN_CONTENT = 40;
const TEXT_LINE = 14;

/** The node's content area [x, y, w, h] in node space, or null when the node leaves no room. */
function contentArea(node) {
  const top = contentBottom(node) + 4;
  const area = [6, top, node.size[0] - 12, node.size[1] - top - 6];
  return area[3] >= MIN_CONTENT && area[2] >= MIN_CONTENT ? area : null;
}

function drawText(ctx, lines, [x, y, w, h]) {
  const { font, fillStyle, textAlign } = ctx;
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.clip();
  ctx.font = "12px monospace";
  ctx.fillStyle = "#ddd";
  ctx.textAlign = "left";
  const room = Math.max(1, Math.floor((h - 4) / TEXT_LINE));
  const shown = lines.length > room ? [...lines.slice(0, room - 1), `… ${lines.length - room + 1} more lines`] : lines;
  shown.forEach((line, i) => ctx.fillText(line, x + 2, y + 12 + i * TEXT_LINE));
  ctx.restore();
  Object.assign(ctx, { font, fillStyle, textAlign });
}

function drawImageFit(ctx, img, [x, y, w, h]) {
  if (!img?.naturalWidth) return;
  const scale = Math.min(w / img.naturalWidth, h / img.naturalHeight);
  const dw = img.naturalWidth * scale, dh = img.naturalHeight * scale;
  ctx.drawImage(img, x + (w - dw) / 2, y + (h - dh) / 2, dw, dh);
}

/** Per-node UI state kept outside the serialized graph. */
export function runState(node) {
  node.loom ??= { running: false, images: [], preview: null, errors: null };
  return node.loom;
}

const nodeMethods = {
  onDrawBackground(ctx) {
    if (this.flags?.collapsed) return;
    const state = runState(this);
    const area = contentArea(this);
    if (!area) return;
    const img = state.preview ?? state.images[state.imageIndex ?? 0];
    if (!img) {
      if (state.text) drawText(ctx, state.text, area);
      return;
    }
    if (state.compare && !state.preview) {  // ImageCompare: image A on the left half, B on the right
      const [x, y, w, h] = area;
      drawImageFit(ctx, state.images[0], [x, y, w / 2 - 2, h]);
      drawImageFit(ctx, state.images[1], [x + w / 2 + 2, y, w / 2 - 2, h]);
      return;
    }
    drawImageFit(ctx, img, area);
    if (state.images.length > 1 && !state.preview) {
      ctx.fillStyle = "#ddd";
      ctx.font = "11px sans-serif";
      ctx.textAlign = "right";
      ctx.fillText(`${(state.imageIndex ?? 0) + 1}/${state.images.length}`, this.size[0] - 8, this.size[1] - 8);
    }
  },
  onDrawForeground(ctx) {
    drawTitleMarks(this, ctx, this.loomHooks?.showIds?.());
    const state = runState(this);
    if (state.errors && !this.flags?.collapsed) markErrorWidgets(this, ctx, state.errors);
  },
  onConfigure() {
    for (const w of this.widgets ?? []) if (w.imageUpload) showInputImage(this, w, this.loomHooks);
  },
  /** Double-clicking the title renames the node in place (hooks.rename). */
  onNodeTitleDblClick() { this.loomHooks?.rename?.(this); },
  /** Double-clicking an output image opens it large (hooks.openImage). */
  onDblClick(e, pos) {
    const img = runState(this).images[runState(this).imageIndex ?? 0];
    if (img && pos[1] > contentBottom(this)) this.loomHooks?.openImage?.(JSON.parse(img.dataset.ref));
  },
  /** Gives a new node its content area for images or text; runs never resize a node. */
  makeContentArea() {
    this.setSize([Math.max(this.size[0], 240), contentBottom(this) + 4 + CONTENT_HEIGHT]);
  },
  /** Whether the node has room to show a latent preview of its own. */
  hasContentArea() { return contentArea(this) != null; },
};

/** The node id (when shown), an error mark and a warning mark (a run's notes on its inputs, e.g. a
 * prompt's unknown words), right-aligned in the title bar; the messages are in the node's tooltip. */
export function drawTitleMarks(node, ctx, showId) {
  const errors = node.loom?.errors, warnings = node.loom?.warnings;
  if (!showId && !errors && !warnings?.length) return;
  const { font, fillStyle, textAlign } = ctx;
  const h = LiteGraph.NODE_TITLE_HEIGHT;
  const width = node.flags?.collapsed ? node._collapsed_width ?? node.size[0] : node.size[0];
  let x = width - 8;
  ctx.textAlign = "right";
  ctx.font = "bold 12px sans-serif";
  if (errors) {
    ctx.fillStyle = "#ff6b6b";
    const text = `⚠ ${errors.messages.length}`;
    ctx.fillText(text, x, -h / 2 + 4);
    x -= ctx.measureText(text).width + 8;
  }
  if (warnings?.length) {
    ctx.fillStyle = "#ffc861";
    const text = `⚠ ${warnings.length}`;
    ctx.fillText(text, x, -h / 2 + 4);
    x -= ctx.measureText(text).width + 8;
  }
  if (showId) {
    ctx.fillStyle = "#9aa3ad";
    ctx.fillText(`#${node.id}`, x, -h / 2 + 4);
  }
  Object.assign(ctx, { font, fillStyle, textAlign });
}

/** Red outlines on the widgets an error names; the messages are in the errors panel and tooltip. */
function markErrorWidgets(node, ctx, errors) {
  const { strokeStyle, lineWidth } = ctx;
  ctx.strokeStyle = "#ff4d4d";
  ctx.lineWidth = 2;
  for (const w of node.widgets ?? []) {
    if (!errors.inputs[w.name]) continue;
    ctx.beginPath();
    ctx.roundRect(12, w.y - 2, node.size[0] - 24, (w.computedHeight ?? 24) - 1, 8);
    ctx.stroke();
  }
  Object.assign(ctx, { strokeStyle, lineWidth });
}

function runningStroke() {
  return this.loom?.running ? { color: "#4cff7a", lineWidth: 3, padding: 8 } : undefined;
}

/** Registers one litegraph node type per /object_info class. */
export function registerNodeTypes(objectInfo, hooks) {
  for (const type of Object.keys(LiteGraph.registered_node_types)) LiteGraph.unregisterNodeType(type);
  registerNoteTypes(hooks);
  for (const [name, def] of Object.entries(objectInfo)) {
    const inputs = inputsOf(def);
    const NodeType = class extends LGraphNode {
      static title = def.display_name || name;
      static description = def.description || "";
      constructor(title) {
        super(title ?? NodeType.title);
        this.serialize_widgets = true;
        this.loom = { running: false, images: [], preview: null, errors: null };
        this.strokeStyles.running = runningStroke;
        for (const input of inputs) {
          if (input.type === "IMAGECOMPARE") continue;  // ComfyUI's compare slider: the content area shows it
          if (isWidgetInput(input)) addWidgetFor(this, input, hooks);
          else if (input.type === AUTOGROW) addGrowingInputs(this, input);
          else this.addInput(input.name, input.type, input.optional ? { shape: SlotShape.HollowCircle, optional: true } : {});
        }
        // upload buttons go last: they hold no value, so the positional widgets_values stay aligned
        for (const w of [...(this.widgets ?? [])]) if (w.imageUpload) addUploadButton(this, w, hooks);
        (def.output ?? []).forEach((type, i) => this.addOutput(def.output_name?.[i] ?? type, type));
        const size = this.computeSize();
        this.setSize([Math.max(size[0], this.widgets?.length ? 250 : 180), size[1]]);
        const shows = (def.output_node && !def.output?.length) || this.widgets?.some((w) => w.imageUpload);
        if (shows) this.makeContentArea();
        for (const w of this.widgets ?? []) if (w.imageUpload) showInputImage(this, w, hooks);
      }
    };
    Object.assign(NodeType.prototype, nodeMethods, { loomHooks: hooks });
    if (inputs.some((i) => i.type === DYNAMIC_COMBO)) {
      NodeType.prototype.configure = function (info) {
        showSavedOptions(this, info.widgets_values, hooks);
        return LGraphNode.prototype.configure.call(this, info);
      };
    }
    if (inputs.some((i) => i.type === AUTOGROW)) {
      NodeType.prototype.onConnectionsChange = function () { growInputs(this); };
    }
    LiteGraph.registerNodeType(name, NodeType);
    NodeType.category = def.category || "other";
    NodeType.loomDef = def;
    for (const type of [...(def.output ?? []), ...inputs.map((i) => i.type)]) {
      if (isWidgetInput({ type })) continue;
      LGraphCanvas.link_type_colors[type] = typeColour(type);
    }
  }
}

// Editor-only nodes the backend skips (graph/formats.py UI_ONLY_TYPES): notes in shared workflows.
export const UI_ONLY_TYPES = new Set(["Note", "MarkdownNote"]);

function registerNoteTypes(hooks) {
  for (const name of UI_ONLY_TYPES) {
    const NoteType = class extends LGraphNode {
      static title = name === "Note" ? "Note" : "Markdown note";
      static description = "A note for people reading the workflow; it is not run.";
      constructor(title) {
        super(title ?? NoteType.title);
        this.serialize_widgets = true;
        this.color = "#4a4430";
        this.bgcolor = "#5b5438";
        this.loom = { running: false, images: [], preview: null, errors: null };
        this.addCustomWidget(new TextAreaWidget({ name: "text", callback: () => hooks.onChange?.() }, this, hooks));
        this.setSize([300, 110]);
      }
    };
    Object.assign(NoteType.prototype, nodeMethods, { loomHooks: hooks });
    LiteGraph.registerNodeType(name, NoteType);
    NoteType.category = "utils";
    NoteType.loomDef = { input: {}, output: [], category: "utils" };
  }
}

/** Paints sockets of each type in its colour on this canvas. */
export function colourSockets(canvas) {
  for (const [type, colour] of Object.entries(LGraphCanvas.link_type_colors)) {
    canvas.default_connection_color_byType[type] = colour;
    canvas.default_connection_color_byTypeOff[type] = colour;
  }
}

/** The next seed after a run, as ComfyUI's control_after_generate does. */
export function nextSeed(value, control, opts) {
  const min = opts.min ?? 0;
  const max = Math.min(opts.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  if (control === "increment") return Math.min(max, value + 1);
  if (control === "decrement") return Math.max(min, value - 1);
  if (control === "randomize") return min + Math.floor(Math.random() * (Math.min(max, 2 ** 50) - min + 1));
  return value;
}

/** Applies every seed widget's control after a prompt was queued. */
export function applySeedControls(graph) {
  for (const node of graph._nodes) {
    const widgets = node.widgets ?? [];
    widgets.forEach((w, i) => {
      const control = widgets[i + 1];
      if (!w.seedControl || control?.name !== CONTROL_WIDGET) return;
      w.value = nextSeed(Number(w.value), control.value, w.options);
    });
  }
  graph.setDirtyCanvas(true, false);
}
