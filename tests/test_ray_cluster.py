"""A two-node Ray cluster (ray.cluster_utils.Cluster) loses the node of a running worker and the queue
still drains. Slow (two workers start on two nodes): run with --runslow or LOOM_SLOW=1."""
import asyncio
import time

import aiohttp
import pytest

from tests.ray_harness import assert_loopback, ray_env, stats, wait_workers  # noqa: F401 (ray_env is a fixture)
from tests.server_harness import ServerProc, post_prompt, run, wait_history
from tests.test_ray import txt2img


@pytest.mark.slow
def test_removing_a_node_drains_the_queue(ray_env, tmp_path):
    """Two nodes with one worker slot each; the node running a prompt is removed; every prompt ends."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"loom_worker": 1},
                                                            "include_dashboard": False,
                                                            "temp_dir": str(ray_env)})
    node = cluster.add_node(num_cpus=1, resources={"loom_worker": 1})
    cluster.wait_for_nodes()
    assert_loopback(cluster.address)  # both nodes: ray_env puts every node on 127.0.0.1
    proc = ServerProc(tmp_path / "data", "--ray", cluster.address, "--ray-resource", "loom_worker",
                      "--ray-threads", "1", custom_nodes=False).start()
    try:
        proc.wait_ready(timeout=180)
        wait_workers(proc.url, 2, timeout=240)

        async def main():
            async with aiohttp.ClientSession() as s:
                ids = [(await post_prompt(s, proc.url, txt2img(seed, steps=30)))["prompt_id"] for seed in range(6)]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # remove the second node while it runs a prompt
                    workers = stats(proc.url)["workers"]
                    if all(w["current_prompt"] for w in workers):
                        break
                    await asyncio.sleep(0.1)
                await asyncio.to_thread(cluster.remove_node, node)
                return [await wait_history(s, proc.url, pid, timeout=240) for pid in ids]
        entries = run(main())
        assert [e["status"]["status_str"] for e in entries] == ["success"] * 6
        workers = stats(proc.url)["workers"]
        assert sum(w["lost_attempts"] for w in workers) == 1 and sum(w["alive"] for w in workers) == 1
    finally:
        proc.stop()
        cluster.shutdown()
