// The sidebar panels: the queue (running and pending, cancel), the history (status, images,
// load its workflow), the gallery of output images and the workflows saved on the server.

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

function button(text, onclick, title = "") {
  return el("button", { textContent: text, title, onclick, className: "small" });
}

const imagesOf = (outputs) => Object.values(outputs ?? {}).flatMap((o) => o.images ?? []);

export class Panels {
  constructor({ api, root, app }) {
    this.api = api;
    this.app = app;
    this.queueList = root.querySelector("#queue-list");
    this.historyList = root.querySelector("#history-list");
    this.gallery = root.querySelector("#gallery-grid");
    this.workflowList = root.querySelector("#workflow-list");
    this.galleryKeys = new Set();
    for (const tab of root.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => this.show(tab.dataset.pane));
    root.querySelector("#clear-queue").onclick = () => this.act(() => api.clearQueue());
    root.querySelector("#clear-history").onclick = () => this.act(() => api.clearHistory());
  }

  show(pane) {
    for (const tab of document.querySelectorAll("#sidebar [role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.pane === pane));
    for (const p of document.querySelectorAll("#sidebar .pane")) p.hidden = p.id !== pane;
    if (pane === "workflows-pane") this.refreshWorkflows();
  }

  async act(fn) {
    try {
      await fn();
    } catch (err) {
      this.app.toast(err.message, "error");
    }
    this.refresh();
  }

  async refresh() {
    try {
      const [queue, history] = await Promise.all([this.api.getQueue(), this.api.getHistory()]);
      this.renderQueue(queue);
      this.renderHistory(history);
    } catch (err) {
      this.app.toast(`cannot read the queue: ${err.message}`, "error");
    }
  }

  renderQueue({ queue_running: running = [], queue_pending: pending = [] }) {
    const row = (item, isRunning) => {
      const [number, id, prompt] = item;
      const count = Object.keys(prompt ?? {}).length || prompt?.nodes?.length || 0;
      return el("li", { className: isRunning ? "running" : "" }, [
        el("span", { textContent: `#${number} ${isRunning ? "running" : "pending"} · ${count} nodes` }),
        isRunning
          ? button("Cancel", () => this.act(() => this.api.interrupt(id)), "Interrupt this run")
          : button("Remove", () => this.act(() => this.api.deleteQueued([id])), "Remove from the queue"),
      ]);
    };
    const rows = [...running.map((i) => row(i, true)), ...pending.sort((a, b) => a[0] - b[0]).map((i) => row(i, false))];
    this.queueList.replaceChildren(...(rows.length ? rows : [el("li", { className: "muted", textContent: "The queue is empty." })]));
    document.querySelector("#queue-count").textContent = rows.length ? `(${rows.length})` : "";
  }

  renderHistory(history) {
    const entries = Object.entries(history ?? {}).sort((a, b) => (b[1].prompt?.[0] ?? 0) - (a[1].prompt?.[0] ?? 0));
    const rows = entries.map(([id, entry]) => {
      const status = entry.status?.status_str ?? "?";
      const images = imagesOf(entry.outputs);
      for (const ref of images) this.addToGallery(ref);
      const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
      return el("li", { className: `status-${status}` }, [
        el("div", { className: "row" }, [
          el("span", { textContent: `#${entry.prompt?.[0] ?? "?"} ${status}` }),
          workflow ? button("Load", () => this.app.openWorkflow(workflow, `run #${entry.prompt?.[0]}`), "Load the workflow of this run") : "",
          button("✕", () => this.act(() => this.api.deleteHistory([id])), "Delete from history"),
        ]),
        el("div", { className: "thumbs" }, images.slice(0, 4).map((ref) => this.thumb(ref))),
      ]);
    });
    this.historyList.replaceChildren(...(rows.length ? rows : [el("li", { className: "muted", textContent: "No runs yet." })]));
  }

  thumb(ref) {
    const img = el("img", { src: this.api.viewUrl(ref), alt: ref.filename, title: ref.filename, loading: "lazy" });
    img.addEventListener("click", () => this.app.lightbox(ref));
    return img;
  }

  addToGallery(ref) {
    const key = `${ref.type}/${ref.subfolder}/${ref.filename}`;
    if (this.galleryKeys.has(key)) return;
    this.galleryKeys.add(key);
    this.gallery.querySelector(".muted")?.remove();
    this.gallery.prepend(this.thumb(ref));
  }

  async refreshWorkflows() {
    try {
      const names = await this.api.listWorkflows();
      const rows = names.map((name) => el("li", {}, [
        el("a", { href: "#", textContent: name.replace(/\.json$/, ""), onclick: (e) => { e.preventDefault(); this.app.openServerWorkflow(name); } }),
        button("✕", async () => {
          if (!confirm(`Delete the saved workflow “${name}”?`)) return;
          await this.act(() => this.api.deleteWorkflow(name));
          this.refreshWorkflows();
        }, "Delete"),
      ]));
      this.workflowList.replaceChildren(...(rows.length ? rows : [el("li", { className: "muted", textContent: "No saved workflows." })]));
    } catch (err) {
      this.workflowList.replaceChildren(el("li", { className: "error", textContent: err.message }));
    }
  }
}
