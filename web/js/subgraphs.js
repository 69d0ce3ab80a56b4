// Subgraphs, in ComfyUI's format: a node type per subgraph definition (so workflows that have them
// load), "Convert to Subgraph" on a selection, opening a subgraph to edit it and going back by the
// breadcrumbs. The saved workflow keeps the definitions (definitions.subgraphs); the server expands
// them into plain nodes when the workflow runs.
import { LiteGraph, SubgraphNode } from "./lib.js";

export class Subgraphs {
  constructor({ graph, canvas, crumbs, fitView, onChange, toast }) {
    Object.assign(this, { graph, canvas, crumbs, fitView, onChange, toast });
    this.views = new Map(); // graph -> the view it had when a subgraph inside it was opened
    graph.events.addEventListener("subgraph-created", (e) => this.register(e.detail.subgraph));
    canvas.canvas.addEventListener("subgraph-opening", (e) => this.views.set(e.detail.closingGraph, this.view()));
    canvas.canvas.addEventListener("subgraph-opened", () => {
      this.fitView();
      this.render();
    });
  }

  /** A node type whose instances stand for one subgraph definition. */
  register(subgraph) {
    const root = this.graph;
    const Type = class extends SubgraphNode {
      constructor() {
        super(root, subgraph, { id: -1, type: subgraph.id, pos: [0, 0], size: [160, 60], inputs: [], outputs: [],
          flags: {}, order: 0, mode: 0, properties: {} });
        this.loom = { running: false, images: [], preview: null, errors: null };
      }
    };
    Type.title = subgraph.name;
    Type.isSubgraph = true; // offered in no node list: an instance needs its definition in the workflow
    Type.skip_list = true;
    Type.loomDef = { input: {}, output: [], description: "A subgraph: open it (the icon on its title) to see its nodes." };
    LiteGraph.registerNodeType(subgraph.id, Type);
    Type.category = "subgraphs";
  }

  /** Puts the selected nodes into a new subgraph and selects its node. */
  convert() {
    const items = this.canvas.selectedItems;
    if (!items?.size) return this.toast("Select the nodes to put in a subgraph first.");
    const { node } = this.canvas.graph.convertToSubgraph(items);
    node.setSize([Math.max(node.size[0], 200), node.size[1]]); // room for the title "New Subgraph"
    this.canvas.selectItems([node]);
    this.onChange();
    return node;
  }

  open(subgraph) { this.canvas.openSubgraph(subgraph); }

  /** Shows a graph of the path (the root when none), restoring the view it had. */
  back(to = this.graph) {
    if (this.canvas.graph === to) return;
    this.canvas.subgraph = to === this.graph ? undefined : to;
    this.canvas.setGraph(to);
    const view = this.views.get(to);
    if (view) Object.assign(this.canvas.ds, { scale: view.scale, offset: [...view.offset] });
    this.canvas.setDirty(true, true);
    this.render();
  }

  view() { return { scale: this.canvas.ds.scale, offset: [...this.canvas.ds.offset] }; }

  /** The path from the root to the open subgraph, each a link back. */
  render() {
    const path = [];
    for (let g = this.canvas.graph; g && g !== this.graph; g = this.parentOf(g)) path.unshift(g);
    this.crumbs.hidden = path.length === 0;
    if (!path.length) return this.crumbs.replaceChildren();
    const link = (graph, label) => Object.assign(document.createElement("button"), {
      className: "small", textContent: label, onclick: () => this.back(graph),
    });
    const items = [link(this.graph, "Workflow")];
    for (const g of path) {
      items.push(Object.assign(document.createElement("span"), { className: "sep", textContent: "›" }));
      items.push(g === this.canvas.graph ? Object.assign(document.createElement("b"), { textContent: g.name }) : link(g, g.name));
    }
    this.crumbs.replaceChildren(...items);
  }

  /** The graph that holds a node of this subgraph (the root or another subgraph). */
  parentOf(subgraph) {
    const holds = (g) => g._nodes.some((n) => n.subgraph === subgraph);
    if (holds(this.graph)) return this.graph;
    return [...this.graph.subgraphs.values()].find(holds) ?? this.graph;
  }
}
