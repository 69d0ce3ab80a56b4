"""Local Ray clusters for the tests, on loopback only, and the checks that they are.

Ray advertises and binds the host's network address even for `ray.init(address="local")`; its
switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes a node use 127.0.0.1 (and its gRPC servers then
listen there only). Ray is imported only once these settings are in the environment (it reads
them, and RAY_AUTH_MODE, at import)."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import time
import urllib.request

import psutil
import pytest


TOKEN = secrets.token_hex(16)  # one per test session: Ray keeps the token it read first for the process


def ray_settings(temp) -> dict[str, str]:
    """No usage stats, a token of our own, temp files and worker scratch folders under `temp`
    (never ~/.ray or /tmp/ray), every node on loopback."""
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
            "RAY_TMPDIR": str(temp), "TMPDIR": str(temp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Ray's settings for a test module; the server subprocesses inherit them."""
    temp = tmp_path_factory.mktemp("ray")
    (temp / "ray").mkdir()  # where Ray keeps the address of the cluster it started last
    env = ray_settings(temp)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import ray  # noqa: F401 (fails loudly when Ray is not installed)

        yield temp
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_local_cluster(temp, num_cpus: int, workers: int) -> str:
    """A one-node cluster in this process with `workers` units of the loom_worker resource; returns
    its GCS address, checked to be on loopback."""
    import ray

    ctx = ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus,
                   resources={"loom_worker": workers}, include_dashboard=False, _temp_dir=str(temp))
    address = ctx.address_info["gcs_address"]
    assert_loopback(address)
    return address


@contextlib.contextmanager
def local_cluster(temp, num_cpus: int, workers: int):
    """start_local_cluster, shut down on exit."""
    import ray

    try:
        yield start_local_cluster(temp, num_cpus, workers)
    finally:
        ray.shutdown()


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def assert_loopback(gcs_address: str, *pids: int) -> None:
    """The GCS address is a loopback one, and every socket listening in this process, the processes
    `pids`, and their children (Ray's GCS, raylets, workers, the server's driver) is bound to loopback."""
    host = gcs_address.rsplit(":", 1)[0].strip("[]")
    assert _is_loopback(host), f"the Ray cluster is not on loopback: {gcs_address}"
    roots = [psutil.Process()] + [psutil.Process(p) for p in pids]
    procs = {p.pid: p for root in roots for p in [root, *root.children(recursive=True)]}
    exposed = []
    for proc in procs.values():
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        exposed += [(proc.name(), c.laddr) for c in conns
                    if c.status == psutil.CONN_LISTEN and not _is_loopback(c.laddr.ip)]
    assert not exposed, f"listening beyond loopback: {exposed}"


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/system_stats", timeout=10) as r:
        return json.load(r)["loom"]


def wait_workers(url: str, alive: int, timeout: float, pids_not=()) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = stats(url)["workers"]
        up = [w for w in workers if w["alive"] and w["pid"] not in pids_not]
        if len(up) >= alive:
            return workers
        time.sleep(0.2)
    raise TimeoutError(f"workers did not come up: {workers}")
