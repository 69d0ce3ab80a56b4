"""ComfyUI's jobs API (/api/jobs) on a real server: queue and history as light job summaries."""
import asyncio

import aiohttp
import pytest

from tests.server_harness import ServerProc, picture_prompt, post_prompt, run, wait_history

FAILING = {"1": {"class_type": "Number", "inputs": {"value": 1.0}},
           "2": {"class_type": "Fail", "inputs": {"x": ["1", 0]}},
           "3": {"class_type": "ToText", "inputs": {"x": ["2", 0], "style": "plain"}},
           "4": {"class_type": "Show", "inputs": {"text": ["3", 0]}}}
SUMMARY_KEYS = {"id", "status", "priority", "create_time", "execution_start_time", "execution_end_time",
                "execution_error", "outputs_count", "previewable_outputs_count", "preview_output", "workflow_id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProc(tmp_path_factory.mktemp("jobs") / "data").start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def jobs(s, url, **query):
    async with s.get(url + "/api/jobs", params=query) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


def test_jobs_list_filters_pages_and_details(server):
    async def main():
        async with aiohttp.ClientSession() as s:
            ok = await post_prompt(s, server.url, picture_prompt(seed=3, prefix="jobs"),
                                   extra_data={"extra_pnginfo": {"workflow": {"id": "wf-a", "nodes": []}}})
            bad = await post_prompt(s, server.url, FAILING)
            # a slow prompt runs while another waits behind it
            slow = await post_prompt(s, server.url, picture_prompt(seed=4, steps=40, delay=0.1))
            after = await post_prompt(s, server.url, picture_prompt(seed=5))
            await wait_history(s, server.url, bad["prompt_id"])
            for _ in range(100):
                queue = await jobs(s, server.url, status="in_progress,pending")
                if [j["status"] for j in queue["jobs"]] == ["pending", "in_progress"]:
                    break
                await asyncio.sleep(0.05)
            assert [(j["id"], j["status"]) for j in queue["jobs"]] == [(after["prompt_id"], "pending"),
                                                                       (slow["prompt_id"], "in_progress")]
            assert queue["pagination"] == {"offset": 0, "limit": 2, "total": 2, "has_more": False}
            assert all(j["outputs_count"] == 0 and "workflow" not in j for j in queue["jobs"])
            async with s.post(server.url + "/interrupt", json={"prompt_id": slow["prompt_id"]}) as r:
                assert (await r.json())["interrupted"]
            await wait_history(s, server.url, after["prompt_id"])

            history = await jobs(s, server.url, status="completed,failed,cancelled")
            by_id = {j["id"]: j for j in history["jobs"]}
            assert [j["id"] for j in history["jobs"]] == [after["prompt_id"], slow["prompt_id"], bad["prompt_id"],
                                                           ok["prompt_id"]]  # newest first
            assert [by_id[p["prompt_id"]]["status"] for p in (ok, bad, slow, after)] == \
                ["completed", "failed", "cancelled", "completed"]
            done = by_id[ok["prompt_id"]]
            assert set(done) <= SUMMARY_KEYS and done["workflow_id"] == "wf-a"
            assert done["outputs_count"] == done["previewable_outputs_count"] == 1
            saved = (await wait_history(s, server.url, ok["prompt_id"]))["outputs"]["4"]["images"][0]
            assert done["preview_output"] == {**saved, "nodeId": "4", "mediaType": "images"}
            assert done["execution_start_time"] <= done["execution_end_time"]
            assert isinstance(done["create_time"], int) and done["create_time"] > 1e12  # milliseconds
            failed = by_id[bad["prompt_id"]]
            assert failed["execution_error"]["node_id"] == "2"
            assert failed["execution_error"]["exception_message"] == "this node always fails"
            assert failed["outputs_count"] == 0 and "preview_output" not in failed

            # one status of the history; pages; oldest first; a workflow's jobs
            assert [j["id"] for j in (await jobs(s, server.url, status="failed"))["jobs"]] == [bad["prompt_id"]]
            page = await jobs(s, server.url, status="completed,failed,cancelled", limit="2", offset="1")
            assert [j["id"] for j in page["jobs"]] == [slow["prompt_id"], bad["prompt_id"]]
            assert page["pagination"] == {"offset": 1, "limit": 2, "total": 4, "has_more": True}
            page = await jobs(s, server.url, status="completed", limit="1", offset="1")
            assert [j["id"] for j in page["jobs"]] == [ok["prompt_id"]]
            assert page["pagination"] == {"offset": 1, "limit": 1, "total": 2, "has_more": False}
            oldest = await jobs(s, server.url, sort_order="asc")
            assert [j["id"] for j in oldest["jobs"]] == [p["prompt_id"] for p in (ok, bad, slow, after)]
            assert [j["id"] for j in (await jobs(s, server.url, workflow_id="wf-a"))["jobs"]] == [ok["prompt_id"]]
            longest = await jobs(s, server.url, sort_by="execution_duration", limit="1")
            assert longest["jobs"][0]["id"] == slow["prompt_id"]

            # one job in full: outputs, status and what was posted
            async with s.get(f"{server.url}/api/jobs/{ok['prompt_id']}") as r:
                job = await r.json()
            assert job["status"] == "completed" and job["outputs"]["4"]["images"] == [saved]
            assert job["execution_status"]["status_str"] == "success"
            assert job["workflow"]["prompt"]["2"]["inputs"]["seed"] == 3
            assert job["workflow"]["extra_data"]["extra_pnginfo"]["workflow"]["id"] == "wf-a"
            async with s.get(server.url + "/api/jobs/nope") as r:
                assert r.status == 404 and (await r.json())["error"]["type"] == "not_found"
            for bad_query in ({"status": "done"}, {"limit": "-1"}, {"sort_by": "name"}, {"sort_order": "up"}):
                async with s.get(server.url + "/api/jobs", params=bad_query) as r:
                    assert r.status == 400 and (await r.json())["error"]["type"] == "bad_parameter", bad_query
    run(main())
