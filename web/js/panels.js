// The sidebar panels: the queue (running and pending, cancel), the history (status, the reason a
// run failed, its first image, load its workflow), the gallery of output images and the workflows
// saved on the server. Queue and history come from one request for light job summaries (ComfyUI's
// jobs API); a run's workflow is fetched only when it is opened.

function el(tag, props = {}, children = []) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

function button(text, onclick, title = "") {
  return el("button", { textContent: text, title, onclick, className: "small" });
}

const JOBS_SHOWN = 64;
const REFRESH_MS = 60; // the calls of one moment (a run ending, the queue changing) make one request
const STATUS = {
  completed: ["success", "done"], failed: ["error", "failed"], cancelled: ["cancelled", "cancelled"],
};

function seconds(job) {
  const { execution_start_time: start, execution_end_time: end } = job;
  return start && end ? ` · ${((end - start) / 1000).toFixed(1)} s` : "";
}

export class Panels {
  constructor({ api, root, app }) {
    this.api = api;
    this.app = app;
    this.queueList = root.querySelector("#queue-list");
    this.historyList = root.querySelector("#history-list");
    this.gallery = root.querySelector("#gallery-grid");
    this.workflowList = root.querySelector("#workflow-list");
    this.galleryKeys = new Set();
    this.onScreen = new IntersectionObserver((entries) => {
      for (const { target, isIntersecting } of entries) {
        if (!isIntersecting) continue;
        target.src = target.dataset.src;
        this.onScreen.unobserve(target);
      }
    });
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

  /** Reads the queue and the history again, once for a burst of calls. */
  refresh() {
    if (this.inFlight) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), REFRESH_MS);
  }

  async load() {
    this.inFlight = true;
    try {
      const { jobs, pagination } = await this.api.getJobs({ limit: JOBS_SHOWN });
      this.renderQueue(jobs.filter((j) => j.status === "in_progress"), jobs.filter((j) => j.status === "pending"));
      this.renderHistory(jobs.filter((j) => STATUS[j.status]), pagination.total);
      this.loaded = true;
    } catch (err) {
      this.app.toast(`cannot read the queue: ${err.message}`, "error");
    } finally {
      this.inFlight = false;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    }
  }

  renderQueue(running, pending) {
    const row = (job, isRunning) => el("li", { className: isRunning ? "running" : "" }, [
      el("span", { textContent: `#${job.priority} ${isRunning ? "running" : "pending"}` }),
      isRunning
        ? button("Cancel", () => this.act(() => this.api.interrupt(job.id)), "Interrupt this run")
        : button("Remove", () => this.act(() => this.api.deleteQueued([job.id])), "Remove from the queue"),
    ]);
    const rows = [...running.map((j) => row(j, true)), ...pending.sort((a, b) => a.priority - b.priority).map((j) => row(j, false))];
    this.queueList.replaceChildren(...(rows.length ? rows : [el("li", { className: "muted", textContent: "The queue is empty." })]));
    for (const id of ["#queue-count", "#runs-count"]) document.querySelector(id).textContent = rows.length ? ` (${rows.length})` : "";
  }

  renderHistory(jobs, total) {
    const rows = jobs.map((job) => {
      const [kind, label] = STATUS[job.status];
      const error = job.execution_error;
      const reason = error ? `${error.exception_type ?? "Error"} in #${error.node_id} ${error.node_type ?? ""}: ${error.exception_message ?? ""}` : "";
      const preview = job.preview_output;
      if (preview) this.addToGallery(preview);
      const more = job.outputs_count > 1 ? el("small", { className: "muted", textContent: `+${job.outputs_count - 1}` }) : "";
      return el("li", { className: `status-${kind}` }, [
        el("div", { className: "row" }, [
          el("span", { textContent: `#${job.priority} ${label}${seconds(job)}` }),
          button("Load", () => this.openRun(job), "Load the workflow of this run"),
          button("✕", () => this.act(() => this.api.deleteHistory([job.id])), "Delete from history"),
        ]),
        reason ? el("div", { className: "reason", textContent: reason, title: reason }) : "",
        preview ? el("div", { className: "thumbs" }, [this.thumb(preview), more]) : "",
      ]);
    });
    for (const img of this.historyList.querySelectorAll("img:not([src])")) this.onScreen.unobserve(img);
    const older = total > JOBS_SHOWN ? [el("li", { className: "muted", textContent: `${total - JOBS_SHOWN} older jobs not shown` })] : [];
    this.historyList.replaceChildren(...(rows.length ? [...rows, ...older] : [el("li", { className: "muted", textContent: "No runs yet." })]));
  }

  /** Opens the workflow a run was queued with (the editor's, or else its API prompt). */
  async openRun(job) {
    try {
      const { workflow } = await this.api.getJob(job.id);
      const graph = workflow?.extra_data?.extra_pnginfo?.workflow ?? workflow?.prompt;
      if (!graph) throw new Error("the server kept no workflow for it");
      this.app.openWorkflow(graph, `run #${job.priority}`);
    } catch (err) {
      this.app.toast(`Cannot load run #${job.priority}: ${err.message}`, "error");
    }
  }

  /** A thumbnail that loads its image only once it is on the screen (not in a hidden tab or panel). */
  thumb(ref) {
    const img = el("img", { alt: ref.filename, title: ref.filename });
    img.dataset.src = this.api.viewUrl(ref);
    img.addEventListener("click", () => this.app.lightbox(ref));
    this.onScreen.observe(img);
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
