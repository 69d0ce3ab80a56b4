"""Helpers of the editor's browser tests: the real server as a subprocess, and the editor page."""
from __future__ import annotations

import base64
import re
from pathlib import Path

from tests.server_harness import ROOT, ServerProc

ARTIFACTS = ROOT / "test-artifacts" / "editor"


def editor_server(data_dir: Path, args: list[str]) -> ServerProc:
    """The real server with the built-in nodes; its log is kept beside the screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ServerProc(data_dir, *args, custom_nodes=False, log_path=ARTIFACTS / "server.log")


class Editor:
    """One fresh browser context (empty storage) on the editor, collecting console errors."""

    def __init__(self, page, url):
        self.page, self.url = page, url
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.allowed: list[str] = []  # expected messages, e.g. the 400 of a refused workflow
        page.on("console", lambda m: (self.errors if m.type == "error" else self.warnings).append(f"console.{m.type}: {m.text}")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    async def open(self):
        await self.page.goto(self.url)
        await self.page.wait_for_selector("body[data-ready=true]", state="attached", timeout=30000)
        await self.page.wait_for_function("window.loom.api.connected", timeout=10000)
        return self

    async def shot(self, name: str):
        await self.page.wait_for_timeout(150)  # let the canvas draw its last frame
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    async def js(self, expr: str, arg=None):
        return await self.page.evaluate(expr, arg)

    async def nodes(self) -> list[dict]:
        return await self.js("""() => loom.graph._nodes.map(n => ({id: n.id, type: n.type,
            inputs: (n.inputs ?? []).map(i => ({name: i.name, type: i.type, link: i.link, optional: !!i.optional})),
            outputs: (n.outputs ?? []).map(o => ({name: o.name, type: o.type, links: o.links ?? []})),
            widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value]))}))""")

    async def node_ids(self, type_: str) -> list[int]:
        return [n["id"] for n in await self.nodes() if n["type"] == type_]

    async def slot_xy(self, node_id: int, name: str, is_input: bool) -> tuple[float, float]:
        """Where a node's slot is on the screen."""
        return tuple(await self.js("""([id, name, isInput]) => {
            const node = loom.graph.getNodeById(id);
            const slots = isInput ? node.inputs : node.outputs;
            const slot = slots.findIndex(s => s.name === name);
            if (slot < 0) throw new Error(`no slot ${name} on node ${id}`);
            const [x, y] = loom.canvas.ds.convertOffsetToCanvas(node.getConnectionPos(isInput, slot));
            const r = loom.canvasEl.getBoundingClientRect();
            return [r.left + x, r.top + y];
        }""", [node_id, name, is_input]))

    async def title_xy(self, node_id: int) -> tuple[float, float]:
        """A point on a node's title bar on the screen."""
        return tuple(await self.js("""(id) => {
            const node = loom.graph.getNodeById(id);
            const [x, y] = loom.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] - 12]);
            const r = loom.canvasEl.getBoundingClientRect();
            return [r.left + x, r.top + y];
        }""", node_id))

    async def widget_xy(self, node_id: int, name: str) -> tuple[float, float]:
        """The middle of a node's widget on the screen."""
        return tuple(await self.js("""([id, name]) => {
            const node = loom.graph.getNodeById(id);
            const w = node.widgets.find(w => w.name === name);
            const [x, y] = loom.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] + w.y + 10]);
            const r = loom.canvasEl.getBoundingClientRect();
            return [r.left + x, r.top + y];
        }""", [node_id, name]))

    async def set_widget(self, node_id: int, name: str, value):
        """Types a value into a widget as a user does: click it, type over it in place, Enter."""
        await self.page.mouse.click(*await self.widget_xy(node_id, name))
        field = self.page.locator("#dom-widgets input.inline-edit")
        await field.fill(str(value))
        await field.press("Enter")
        await self.page.wait_for_timeout(50)

    async def shown_after(self, action, selector: str = "#dom-widgets input.inline-edit", tries: int = 3):
        """The element (default: the in-place text field) that `action` (a coroutine function: a
        double click, a menu pick) shows. On a loaded machine one software-rendered frame can outlast
        the double-click interval, so the page sees two single clicks; the action is then repeated,
        as a user would."""
        element = self.page.locator(selector)
        for attempt in range(tries):
            await action()
            try:
                await element.wait_for(timeout=10000)
                return element
            except Exception:
                if attempt == tries - 1:
                    raise
        return element

    async def wait_for_image(self, node_id: int, timeout: float = 100000):
        """Until the node shows a loaded output image (a run finished)."""
        await self.page.wait_for_function(f"""() => {{ const img = loom.graph.getNodeById({node_id}).loom.images[0];
            return img && img.complete && img.naturalWidth > 0 }}""", timeout=timeout)

    def text_area(self, node_id: int, name: str):
        """The text area a multi-line widget shows on its node."""
        return self.page.locator(f'#dom-widgets textarea[data-node="{node_id}"][data-widget="{name}"]')

    async def drawn_texts(self) -> list[str]:
        """Every text the canvas draws in one full frame (its draw state, not its pixels)."""
        return await self.js("""() => {
            const ctx = loom.canvas.ctx, texts = [], fillText = ctx.fillText;
            ctx.fillText = function (text, ...rest) { texts.push(String(text)); return fillText.call(this, text, ...rest); };
            try { loom.canvas.draw(true, true); } finally { ctx.fillText = fillText; }
            return texts;
        }""")

    async def node_menu(self, node_id: int) -> list[str]:
        """Opens a node's context menu (right-click on its title); returns its entries."""
        await self.page.keyboard.press("Escape")
        await self.page.mouse.click(*await self.title_xy(node_id), button="right")
        await self.page.wait_for_selector(".litecontextmenu")
        entries = await self.page.locator(".litecontextmenu").last.locator(".litemenu-entry").all_text_contents()
        return [e for e in entries if e]

    async def pick_menu(self, text: str):
        """Clicks an entry of the newest context menu."""
        entry = self.page.locator(".litecontextmenu").last.locator(".litemenu-entry")
        await entry.filter(has_text=re.compile(f"^{re.escape(text)}$")).click()
        await self.page.wait_for_timeout(80)

    async def drag_link(self, src: int, output: str, dst: int, input_: str):
        (x0, y0), (x1, y1) = await self.slot_xy(src, output, False), await self.slot_xy(dst, input_, True)
        mouse = self.page.mouse
        await mouse.move(x0, y0)
        await mouse.down()
        await mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=6)
        await mouse.move(x1, y1, steps=6)
        await mouse.up()
        await self.page.wait_for_timeout(50)

    async def drop_file(self, name: str, data: bytes, mime: str):
        """Drops a file onto the canvas as a user dragging it from the desktop would."""
        await self.js("""([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            const r = loom.canvasEl.getBoundingClientRect();
            const at = {bubbles: true, cancelable: true, dataTransfer: dt, clientX: r.left + 200, clientY: r.top + 200};
            loom.canvasEl.dispatchEvent(new DragEvent("dragover", at));
            loom.canvasEl.dispatchEvent(new DragEvent("drop", at));
        }""", [name, base64.b64encode(data).decode(), mime])
