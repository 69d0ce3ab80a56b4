"""ComfyUI's jobs API: the queue and the history as one list of light job summaries.

    GET /api/jobs?status=pending,in_progress,completed,failed,cancelled&workflow_id=ID
                 &sort_by=created_at|execution_duration&sort_order=desc|asc&limit=N&offset=K
        -> {"jobs": [summary, ...], "pagination": {offset, limit, total, has_more}}
    GET /api/jobs/{id} -> the summary plus outputs, execution_status and workflow {prompt, extra_data}

A summary: {id, status, priority, create_time, execution_start_time, execution_end_time,
execution_error, outputs_count, previewable_outputs_count, preview_output, workflow_id}; times in
milliseconds, fields without a value left out, as ComfyUI does. Summaries are read from the light
columns of the store: no prompt or workflow is parsed for a list.
"""
from __future__ import annotations

import asyncio

from .security import Refused, reply

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
HISTORY = {"completed", "failed", "cancelled"}
STATE_OF = {"pending": "pending", "in_progress": "running", "completed": "done", "failed": "done", "cancelled": "done"}
PREVIEWABLE = {"images", "video", "audio", "3d"}
THREE_D = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
MAX_LIMIT = 10_000


def _history_status(result: dict) -> str:
    status = result.get("status") or {}
    if status.get("status_str") == "error":
        interrupted = any(m[0] == "execution_interrupted" for m in status.get("messages") or []
                          if isinstance(m, list) and m)
        return "cancelled" if interrupted else "failed"
    return "completed"


def _times(result: dict) -> tuple[int | None, int | None, dict | None]:
    """(start, end, execution_error) from the run's messages."""
    start = end = error = None
    for message in (result.get("status") or {}).get("messages") or []:
        if not (isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict)):
            continue
        event, data = message
        if event == "execution_start":
            start = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            if event == "execution_error":
                error = data
    return start, end, error


def outputs_summary(outputs: dict) -> tuple[int, int, dict | None]:
    """(outputs_count, previewable_outputs_count, preview_output): the first previewable file,
    preferring one of the output folder, with its nodeId and mediaType."""
    count = previewable = 0
    preview = fallback = None
    for node_id, node_outputs in (outputs or {}).items():
        if not isinstance(node_outputs, dict):
            continue
        for media, items in node_outputs.items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                name = str(item.get("filename", "")).lower()
                if not (media in PREVIEWABLE or str(item.get("format", "")).startswith(("video/", "audio/"))
                        or name.endswith(THREE_D)):
                    continue
                previewable += 1
                shown = {**item, "nodeId": node_id, "mediaType": item.get("mediaType", media)}
                if preview is None and item.get("type") == "output":
                    preview = shown
                elif fallback is None:
                    fallback = shown
    return count, previewable, preview or fallback


def summary(row: dict) -> dict:
    """A store row (graph.store.Store.summaries) as ComfyUI's job summary."""
    job = {"id": row["id"], "priority": row["number"], "create_time": int(row["created"] * 1000),
           "workflow_id": row["workflow_id"]}
    if row["state"] != "done":
        job.update(status="pending" if row["state"] == "pending" else "in_progress", outputs_count=0)
        if row["state"] == "running" and row["started"]:
            job["execution_start_time"] = int(row["started"] * 1000)
        return {k: v for k, v in job.items() if v is not None}
    result = row["result"] or {}
    start, end, error = _times(result)
    count, previewable, preview = outputs_summary(result.get("outputs") or {})
    job.update(status=_history_status(result), execution_start_time=start, execution_end_time=end,
               execution_error=error, outputs_count=count, previewable_outputs_count=previewable,
               preview_output=preview)
    return {k: v for k, v in job.items() if v is not None}


def _duration(job: dict) -> int:
    start, end = job.get("execution_start_time"), job.get("execution_end_time")
    return end - start if start and end else 0


def list_jobs(store, statuses: list[str], workflow_id: str | None = None, sort_by: str = "created_at",
              newest_first: bool = True, limit: int | None = None, offset: int = 0) -> dict:
    """The page of jobs in `statuses`. The store pages by itself unless a history status is
    filtered out or the order is by duration; then the summaries are filtered and sorted here."""
    states = tuple(dict.fromkeys(STATE_OF[s] for s in statuses))
    asked = HISTORY & set(statuses)
    by_store = sort_by == "created_at" and asked in (set(), HISTORY)
    if by_store:
        rows, total = store.summaries(states, newest_first, limit, offset, workflow_id)
        jobs = [summary(r) for r in rows]
    else:
        rows, _ = store.summaries(states, newest_first, None, 0, workflow_id)
        jobs = [j for j in map(summary, rows) if j["status"] in statuses]
        if sort_by == "execution_duration":
            jobs.sort(key=_duration, reverse=newest_first)
        total = len(jobs)
        jobs = jobs[offset:offset + limit if limit is not None else None]
    return {"jobs": jobs, "pagination": {"offset": offset, "limit": limit if limit is not None else total,
                                         "total": total, "has_more": offset + len(jobs) < total}}


def job_detail(store, prompt_id: str) -> dict | None:
    item = store.get(prompt_id)
    if item is None:
        return None
    workflow = ((item.extra_data or {}).get("extra_pnginfo") or {}).get("workflow")
    row = {"id": item.id, "number": item.number, "state": item.state, "created": item.created,
           "started": None, "finished": None, "result": item.result,
           "workflow_id": workflow.get("id") if isinstance(workflow, dict) else None}
    job = summary(row)
    if item.state == "done":
        job["outputs"] = (item.result or {}).get("outputs", {})
        job["execution_status"] = (item.result or {}).get("status", {})
    job["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
    return job


def _int(request, name: str, default: int | None, high: int) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) > high:
        raise Refused(400, f"{name} must be an integer from 0 to {high}, not {value!r}", "bad_parameter")
    return int(value)


def routes(server) -> list[tuple]:
    async def get_jobs(request):
        query = request.query
        statuses = [s.strip() for s in query.get("status", "").split(",") if s.strip()] or list(STATUSES)
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown:
            raise Refused(400, f"unknown job status {unknown[0]!r}; expected some of {', '.join(STATUSES)}",
                          "bad_parameter")
        sort_by = query.get("sort_by", "created_at")
        if sort_by not in ("created_at", "execution_duration"):
            raise Refused(400, "sort_by must be created_at or execution_duration", "bad_parameter")
        order = query.get("sort_order", "desc")
        if order not in ("asc", "desc"):
            raise Refused(400, "sort_order must be asc or desc", "bad_parameter")
        limit, offset = _int(request, "limit", None, MAX_LIMIT), _int(request, "offset", 0, 2**62)
        await server.core()
        return reply(await asyncio.to_thread(list_jobs, server.store, statuses, query.get("workflow_id") or None,
                                             sort_by, order == "desc", limit, offset))

    async def get_job(request):
        await server.core()
        job = await asyncio.to_thread(job_detail, server.store, request.match_info["job_id"])
        if job is None:
            raise Refused(404, f"no job {request.match_info['job_id']!r}", "not_found")
        return reply(job)

    return [("get", "/jobs", get_jobs, "Queue and history as job summaries (ComfyUI's jobs API)"),
            ("get", "/jobs/{job_id}", get_job, "One job with its outputs and workflow")]
