"""The extra model folders of --extra-model-paths-config reach the Ray workers: a checkpoint found only
through the yaml (and a link in it) loads on a worker. Slow: a local Ray cluster starts (~1.5 min)."""
import json
import os
from pathlib import Path

import aiohttp
import pytest

from tests.ray_harness import local_cluster, ray_env, wait_workers  # noqa: F401
from tests.server_harness import ServerProc, post_prompt, run, wait_history

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_env, tmp_path_factory, tiny_sd):
    base = tmp_path_factory.mktemp("rayextra")
    (base / "comfy" / "checkpoints").mkdir(parents=True)
    os.symlink(tiny_sd, base / "comfy" / "checkpoints" / "extra-sd")
    (base / "extra.yaml").write_text("comfy:\n  checkpoints: comfy/checkpoints\n")
    with local_cluster(ray_env, num_cpus=1, workers=1) as address:
        proc = ServerProc(base / "data", "--ray", address, "--ray-resource", "loom_worker", "--ray-threads", "1",
                          "--extra-model-paths-config", str(base / "extra.yaml"), custom_nodes=False).start()
        try:
            proc.wait_ready(timeout=120)
            wait_workers(proc.url, 1, timeout=120)
            yield proc
        finally:
            proc.stop()


def test_a_worker_loads_a_model_of_the_extra_folders(server):
    prompt = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    prompt["1"]["inputs"]["model"] = "extra-sd"
    prompt["6"]["inputs"]["steps"] = 1

    async def main():
        async with aiohttp.ClientSession() as s:
            prompt_id = (await post_prompt(s, server.url, prompt))["prompt_id"]
            return await wait_history(s, server.url, prompt_id, timeout=180)
    entry = run(main())
    assert entry["status"]["status_str"] == "success", entry["status"]
