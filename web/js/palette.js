// The node palette: a searchable category tree in the sidebar (double-click or drag a node onto the
// canvas) and a search popup (double-click on the canvas, or a link dropped on empty canvas).
import { LiteGraph } from "./lib.js";
import { inputsOf, isWidgetInput } from "./nodes.js";

export const NODE_DRAG_TYPE = "application/x-loom-node";

function nodeEntries() {
  return Object.entries(LiteGraph.registered_node_types).filter(([, cls]) => !cls.isSubgraph).map(([type, cls]) => ({
    type, title: cls.title || type, category: cls.category || "other", cls,
    description: String(cls.description || "").replace(/\s+/g, " ").trim(),
  }));
}

/** Entries matching every word of the query in the title, type, category or description. */
export function searchNodes(query, { inputType, outputType } = {}) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  return nodeEntries()
    .filter((e) => {
      const hay = `${e.title} ${e.type} ${e.category} ${e.description}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    })
    .filter((e) => !inputType || inputsOf(e.cls.loomDef).some((i) => !isWidgetInput(i) && i.type === inputType))
    .filter((e) => !outputType || (e.cls.loomDef.output ?? []).includes(outputType))
    .sort((a, b) => rank(a, words) - rank(b, words) || a.title.localeCompare(b.title));
}

function rank(entry, words) {
  const t = entry.title.toLowerCase();
  if (!words.length) return 0;
  if (t === words.join(" ")) return 0;
  return t.startsWith(words[0]) ? 1 : 2;
}

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

export class Palette {
  constructor({ root, search, onAdd }) {
    this.root = root;
    this.search = search;
    this.onAdd = onAdd;
    this.collapsed = new Set(JSON.parse(localStorage.getItem("loom.palette.collapsed") || "[]"));
    search.addEventListener("input", () => this.render());
    search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        const first = searchNodes(search.value)[0];
        if (first) this.onAdd(first.type, null);
      }
    });
  }

  render() {
    const query = this.search.value.trim();
    const entries = searchNodes(query);
    const byCategory = new Map();
    for (const e of entries) {
      if (!byCategory.has(e.category)) byCategory.set(e.category, []);
      byCategory.get(e.category).push(e);
    }
    const sections = [...byCategory.keys()].sort().map((cat) => {
      const open = query !== "" || !this.collapsed.has(cat);
      const details = el("details", { open, className: "palette-category" }, [
        el("summary", { textContent: cat }),
        ...byCategory.get(cat).sort((a, b) => a.title.localeCompare(b.title)).map((e) => this.item(e)),
      ]);
      details.addEventListener("toggle", () => {
        if (query) return;
        details.open ? this.collapsed.delete(cat) : this.collapsed.add(cat);
        localStorage.setItem("loom.palette.collapsed", JSON.stringify([...this.collapsed]));
      });
      return details;
    });
    this.root.replaceChildren(...(sections.length ? sections : [el("p", { className: "muted", textContent: "No node matches." })]));
  }

  item(entry) {
    const item = el("div", {
      className: "palette-item", draggable: true, textContent: entry.title,
      title: `${entry.type}${entry.description ? `\n${entry.description}` : ""}\nDouble-click or drag onto the canvas`,
    });
    item.dataset.type = entry.type;
    item.addEventListener("dblclick", () => this.onAdd(entry.type, null));
    item.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData(NODE_DRAG_TYPE, entry.type);
      e.dataTransfer.effectAllowed = "copy";
    });
    return item;
  }
}

/** A popup search box at a screen position; `choose(type)` is called with the picked node type. */
export class SearchPopup {
  constructor(root) {
    this.root = root;
    this.input = root.querySelector("input");
    this.list = root.querySelector("ul");
    this.filter = this.list.previousElementSibling;
    this.selected = 0;
    this.input.addEventListener("input", () => this.render());
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  open({ x, y, types = {}, choose }) {
    this.types = types;
    this.choose = choose;
    this.root.hidden = false;
    const maxX = window.innerWidth - 340, maxY = window.innerHeight - 360;
    this.root.style.left = `${Math.max(8, Math.min(x, maxX))}px`;
    this.root.style.top = `${Math.max(8, Math.min(y, maxY))}px`;
    const t = types.inputType ?? types.outputType;
    this.filter.textContent = t ? `nodes with ${types.inputType ? "an input" : "an output"} of type ${t}` : "";
    this.filter.hidden = !t;
    this.input.value = "";
    this.render();
    this.input.focus();
  }

  close() {
    this.root.hidden = true;
    this.choose = null;
  }

  render() {
    this.results = searchNodes(this.input.value, this.types).slice(0, 40);
    this.selected = 0;
    this.list.replaceChildren(...this.results.map((e, i) => {
      const li = el("li", { title: e.description }, [el("span", { textContent: e.title }), el("small", { textContent: e.category }),
        ...(e.description ? [el("span", { className: "desc", textContent: e.description })] : [])]);
      li.addEventListener("mousedown", (ev) => { ev.preventDefault(); this.pick(i); });
      return li;
    }));
    this.highlight();
  }

  highlight() {
    [...this.list.children].forEach((li, i) => li.classList.toggle("selected", i === this.selected));
    this.list.children[this.selected]?.scrollIntoView({ block: "nearest" });
  }

  onKey(e) {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const n = this.results.length;
      this.selected = (this.selected + (e.key === "ArrowDown" ? 1 : n - 1)) % Math.max(n, 1);
      this.highlight();
      e.preventDefault();
    } else if (e.key === "Enter") {
      this.pick(this.selected);
      e.preventDefault();
    } else if (e.key === "Escape") {
      this.close();
    }
    e.stopPropagation();
  }

  pick(i) {
    const entry = this.results[i];
    const choose = this.choose;
    this.close();
    if (entry && choose) choose(entry.type);
  }
}
