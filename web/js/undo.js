// Undo/redo by snapshots: after each user action the serialized graph is compared with the last
// state; a difference is pushed. Restoring a state reconfigures the graph and keeps the view.

export class UndoHistory {
  constructor(graph, { limit = 60, onRestore } = {}) {
    this.graph = graph;
    this.limit = limit;
    this.onRestore = onRestore;
    this.undoStack = [];
    this.redoStack = [];
    this.current = this.snapshot();
    this.paused = 0;
  }

  snapshot() {
    const data = this.graph.serialize();
    delete data.extra?.ds; // moving the view is not an edit
    return JSON.stringify(data);
  }

  /** Records the graph if it changed since the last record. */
  check() {
    if (this.paused) return false;
    const now = this.snapshot();
    if (now === this.current) return false;
    this.undoStack.push(this.current);
    if (this.undoStack.length > this.limit) this.undoStack.shift();
    this.redoStack.length = 0;
    this.current = now;
    return true;
  }

  /** Forgets the past, e.g. after loading another workflow. */
  reset() {
    this.undoStack.length = 0;
    this.redoStack.length = 0;
    this.current = this.snapshot();
  }

  undo() { return this.move(this.undoStack, this.redoStack); }
  redo() { return this.move(this.redoStack, this.undoStack); }

  move(from, to) {
    this.check();
    const state = from.pop();
    if (state === undefined) return false;
    to.push(this.current);
    this.current = state;
    this.paused++;
    try {
      this.graph.configure(JSON.parse(state));
    } finally {
      this.paused--;
    }
    this.current = this.snapshot(); // a reloaded graph may serialize slightly differently
    this.onRestore?.();
    return true;
  }
}
