// Keyboard shortcuts: ours, plus the ones the graph canvas handles itself, all listed in the help.

const CANVAS_KEYS = [
  ["Ctrl+C / Ctrl+V", "copy / paste the selected nodes (Ctrl+Shift+V keeps their input links)"],
  ["Delete / Backspace", "delete the selection"],
  ["Ctrl+A", "select every node"],
  ["Ctrl+drag, Shift+click", "select several nodes"],
  ["Drag on empty canvas, Space+drag", "pan"],
  ["Mouse wheel", "zoom"],
  ["Double-click the canvas", "search for a node to add"],
  ["Drag a link onto empty canvas", "add a node that fits the link"],
  ["Right-click", "context menu (add node, group, node options)"],
];

/** [key test, label, description, action(app)] */
const SHORTCUTS = [
  [(e) => mod(e) && e.key === "Enter", "Ctrl+Enter", "queue the workflow", (a) => a.queue()],
  [(e) => mod(e) && !e.shiftKey && e.key.toLowerCase() === "z", "Ctrl+Z", "undo", (a) => a.undo.undo()],
  [(e) => mod(e) && (e.key.toLowerCase() === "y" || (e.shiftKey && e.key.toLowerCase() === "z")), "Ctrl+Y / Ctrl+Shift+Z", "redo", (a) => a.undo.redo()],
  [(e) => mod(e) && e.key.toLowerCase() === "s", "Ctrl+S", "save the workflow to a file", (a) => a.saveFile()],
  [(e) => mod(e) && e.key.toLowerCase() === "o", "Ctrl+O", "open a workflow file (JSON or PNG)", (a) => document.querySelector("#file-input").click()],
  [(e) => mod(e) && e.key.toLowerCase() === "g", "Ctrl+G", "put the selected nodes in a group box", (a) => a.groupSelected()],
  [(e) => mod(e) && e.key.toLowerCase() === "m", "Ctrl+M", "mute / unmute the selected nodes", (a) => a.toggleMode(2)],
  [(e) => mod(e) && e.key.toLowerCase() === "b", "Ctrl+B", "bypass / restore the selected nodes", (a) => a.toggleMode(4)],
  [(e) => !mod(e) && e.key === ".", ".", "fit the view to the graph", (a) => a.fitView()],
  [(e) => !mod(e) && e.key === "[", "[", "show / hide the node list", (a) => a.layout.toggle("palette")],
  [(e) => !mod(e) && e.key === "]", "]", "show / hide the queue, history and gallery", (a) => a.layout.toggle("sidebar")],
  [(e) => !mod(e) && e.key.toLowerCase() === "i", "I", "show / hide node ids", (a) => a.setShowIds(!a.showIds)],
  [(e) => !mod(e) && e.key === "/", "/", "search the node palette", () => document.querySelector("#palette-search").focus()],
  [(e) => e.key === "?" || e.key === "F1", "? or F1", "this help", () => document.querySelector("#help").showModal()],
  [(e) => e.key === "Escape", "Escape", "close popups and panels", (a) => { a.search.close(); document.querySelector("#errors-panel").hidden = true; }],
];

const mod = (e) => e.ctrlKey || e.metaKey;
const canvasKey = (e) => (mod(e) && ["a", "c", "v"].includes(e.key.toLowerCase())) || e.key === "Delete" || e.key === "Backspace";

function typing(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
}

export function bindShortcuts(app) {
  window.addEventListener("keydown", (e) => {
    if (document.querySelector("dialog[open]")) return;
    if (typing(e) && !(mod(e) && e.key === "Enter")) return; // Ctrl+Enter queues from a text field too
    const hit = SHORTCUTS.find(([test]) => test(e));
    if (!hit) {
      // the canvas handles copy, paste, delete and select-all itself, but only while it has the focus
      if (e.target !== app.canvasEl && canvasKey(e)) app.canvas.processKey(e);
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    hit[3](app);
    if (hit[1].startsWith("Ctrl+Z") || hit[1].startsWith("Ctrl+Y")) app.persist();
    else app.changed();
  }, true);
}

export function renderHelp(table) {
  const rows = [...SHORTCUTS.map(([, key, what]) => [key, what]), ...CANVAS_KEYS].map(([key, what]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td><kbd></kbd></td><td></td>";
    tr.querySelector("kbd").textContent = key;
    tr.lastChild.textContent = what;
    return tr;
  });
  table.replaceChildren(...rows);
}
