"""The editor's page weight: requests and bytes of a first visit and of a reload, in Debian's
chromium against the real server, with a history of finished runs.

For each visit it prints the number of requests, the bytes on the wire (headers + body as sent,
compressed where the server compressed) against the decoded bytes of the same responses (the
baseline: what an uncompressed server sends), how many times the page read the queue and history
lists, and the largest responses.

    .venv/bin/python bench/editor_weight.py [--runs 10] [--size 1280x800] [--shot test-artifacts/editor/bench.png]

To compare with an older editor, run this file from a checkout of that version (it measures the
server and the editor of the checkout it is in).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_harness import ServerProc  # noqa: E402  (the tests' server launcher)

CHROMIUM = "/usr/bin/chromium"
READS = ("/history", "/api/history", "/queue", "/api/queue", "/jobs", "/api/jobs")  # queue and history lists


async def fill_history(page, url: str, runs: int) -> None:
    """Queues the editor's default workflow (2 steps) `runs` times from the page, as a user does,
    so the history holds runs with the workflow the editor attaches; waits until they finished."""
    await page.goto(url, wait_until="load")
    await page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60000)
    await page.evaluate("""() => loom.graph._nodes.find((n) => n.type === "SetScheduler")
        .widgets.find((w) => w.name === "steps").value = 2""")
    await page.fill("#batch", str(runs))
    await page.click("#queue-btn")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "history", timeout=30) as r:
            if len(json.load(r)) >= runs:
                return
        await asyncio.sleep(0.5)
    raise TimeoutError("the runs did not finish")


async def visit(page, url: str, reload: bool) -> dict:
    """Loads (or reloads) the editor; returns its requests with their wire and decoded sizes."""
    seen: list = []

    def keep(request):
        seen.append(request)

    page.on("requestfinished", keep)
    if reload:
        await page.reload(wait_until="load")
    else:
        await page.goto(url, wait_until="load")
    await page.wait_for_selector("body[data-ready=true]", state="attached", timeout=60000)
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(500)  # late fetches (the history after the socket opens)
    page.remove_listener("requestfinished", keep)
    rows = []
    for request in seen:
        response = await request.response()
        if response is None:
            continue
        sizes = await request.sizes()
        wire = sizes["responseHeadersSize"] + max(sizes["responseBodySize"], 0)
        try:
            decoded = len(await response.body())
        except Exception:  # a body the browser did not keep (e.g. a redirect)
            decoded = 0
        path = request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
        rows.append({"path": "/" + path, "status": response.status, "wire": wire, "decoded": decoded,
                     "encoding": response.headers.get("content-encoding", "")})
    return {"requests": len(rows), "wire": sum(r["wire"] for r in rows), "decoded": sum(r["decoded"] for r in rows),
            "reads": sum(r["path"] in READS for r in rows), "rows": rows}


def report(name: str, v: dict) -> None:
    print(f"{name}: {v['requests']} requests, {v['wire'] / 1024:.1f} KiB on the wire, "
          f"{v['decoded'] / 1024:.1f} KiB decoded (wire/decoded {v['wire'] / max(v['decoded'], 1):.3f}), "
          f"{v['reads']} queue/history list request(s)")
    for r in sorted(v["rows"], key=lambda r: -r["wire"])[:6]:
        print(f"    {r['wire'] / 1024:8.1f} KiB  {r['decoded'] / 1024:8.1f} KiB decoded  {r['status']}"
              f"  {r['encoding'] or '-':4s} {r['path']}")


async def measure(url: str, runs: int, width: int, height: int, shot: str | None) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        if runs:
            filler = await browser.new_context()
            await fill_history(await filler.new_page(), url, runs)
            await filler.close()
        context = await browser.new_context(viewport={"width": width, "height": height})  # a first visit
        page = await context.new_page()
        first = await visit(page, url, reload=False)
        again = await visit(page, url, reload=True)
        if shot:
            Path(shot).parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=shot)
        await browser.close()
    return {"first": first, "reload": again}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs queued from the editor before the visits")
    parser.add_argument("--size", default="1280x800", help="the browser window")
    parser.add_argument("--web-dir", help="serve another editor folder (e.g. an older checkout's web/)")
    parser.add_argument("--shot", help="save a screenshot of the page after the reload")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProc(Path(tmp) / "data", custom_nodes=False, web_dir=args.web_dir and Path(args.web_dir))
        server.start(timeout=60)
        try:
            server.wait_ready(timeout=300)
            result = asyncio.run(measure(server.url + "/", args.runs, width, height, args.shot))
        finally:
            server.stop()
    print(f"editor page weight, {args.runs} runs in the history, {width}x{height}")
    report("first visit", result["first"])
    report("reload     ", result["reload"])
    first, again = result["first"], result["reload"]
    print(f"reload/first on the wire: {again['wire'] / max(first['wire'], 1):.3f}")


if __name__ == "__main__":
    main()
