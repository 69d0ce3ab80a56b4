// Validation errors of a refused workflow (400 from /prompt, ComfyUI's {error, node_errors} shape)
// and the error a run failed with: each node with errors is marked (a count in its title bar, red
// outlines on the inputs named, drawn by nodes.js inside the node so no label covers a neighbour),
// its messages are in its tooltip, and a panel lists them all; clicking an entry shows its node.
import { runState } from "./nodes.js";

function messageOf(e) {
  const input = e.extra_info?.input_name;
  const named = !input || e.message.includes(`'${input}'`);
  const details = e.details && !e.message.includes(e.details) ? ` (${e.details})` : "";
  return `${named ? "" : `${input}: `}${e.message}${details}`;
}

export class ErrorMarks {
  constructor({ graph, canvas, panel }) {
    this.graph = graph;
    this.canvas = canvas;
    this.panel = panel;
    panel.querySelector(".close").onclick = () => { panel.hidden = true; };
  }

  show(body) {
    const list = [];
    for (const [id, entry] of Object.entries(body.node_errors ?? {})) {
      const node = this.graph.getNodeById(Number(id)) ?? this.graph.getNodeById(id);
      const errors = entry.errors ?? [];
      const inputs = {};
      for (const e of errors) if (e.extra_info?.input_name) inputs[e.extra_info.input_name] = e.message;
      const messages = errors.map(messageOf);
      if (node) {
        runState(node).errors = { inputs, messages };
        node.has_errors = true;
        for (const slot of node.inputs ?? []) slot.hasErrors = slot.name in inputs;
      }
      list.push({ node, id, title: node?.title ?? entry.class_type ?? id, messages });
    }
    this.render(body.error?.message ?? "The workflow is not valid", body.error?.details, list);
    this.graph.setDirtyCanvas(true, true);
  }

  /** Marks the node a run failed in (execution_error) and lists the error. */
  showRunError(data) {
    const node = this.graph.getNodeById(Number(data.node_id)) ?? this.graph.getNodeById(data.node_id);
    const messages = [`${data.exception_type ?? "Error"}: ${data.exception_message ?? ""}`.slice(0, 400)];
    if (node) {
      runState(node).errors = { inputs: {}, messages };
      node.has_errors = true;
    }
    const title = node?.title ?? data.node_type ?? "";
    this.render(`The run failed in #${data.node_id} ${title}`, "", [{ node, id: data.node_id, title, messages }]);
    this.graph.setDirtyCanvas(true, true);
  }

  render(top, details, list) {
    const items = list.map(({ node, id, title, messages }) => {
      const li = document.createElement("li");
      li.innerHTML = "<b></b><ul></ul>";
      li.querySelector("b").textContent = `#${id} ${title}`;
      li.querySelector("ul").append(...messages.map((m) => Object.assign(document.createElement("li"), { textContent: m })));
      if (node) li.addEventListener("click", () => { this.canvas.centerOnNode(node); this.canvas.selectItems([node]); });
      return li;
    });
    this.panel.querySelector(".title").textContent = top;
    this.panel.querySelector(".details").textContent = list.length ? "" : (details ?? "");
    this.panel.querySelector("ul").replaceChildren(...items);
    this.panel.hidden = false;
  }

  clear() {
    for (const node of this.graph._nodes) {
      if (node.loom) node.loom.errors = null;
      node.has_errors = false;
      for (const slot of node.inputs ?? []) slot.hasErrors = false;
    }
    this.panel.hidden = true;
    this.graph.setDirtyCanvas(true, true);
  }
}
