"""Loom's server and command line.

    python server.py                     serve the API and the editor (see --help)
    python server.py run WORKFLOW.json   run one workflow headless, with a progress bar (JSON or PNG)
    python server.py workflow extract IMAGE.png [--out FILE]   the workflow a PNG carries
    python server.py workflow check WORKFLOW                    what a shared workflow needs
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="server.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1", help="address to bind; not loopback requires a token")
    p.add_argument("--port", type=int, default=8188, help="0 picks a free port (printed at start)")
    p.add_argument("--auth-token", default=None, help="token clients must send (default: none on loopback, "
                                                       "generated and printed otherwise)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin browser requests from ORIGIN (repeatable; '*' for any)")
    p.add_argument("--ready-wait", type=float, default=15.0, metavar="SECONDS",
                   help="how long /prompt and /object_info wait for the nodes to load before answering 503")
    p.add_argument("--web-dir", default=str(ROOT / "web"), help="the editor's files, served at /")
    p.add_argument("--preview-method", choices=("none", "auto", "latent2rgb", "taesd"), default="none",
                   help="latent previews for prompts that do not choose (extra_data.preview_method), as ComfyUI's")
    p.add_argument("--frontend", choices=("loom", "comfyui"), default="loom",
                   help="the editor served at /: Loom's (--web-dir), or ComfyUI's official frontend\n"
                        "(pip install 'loom[comfyui-frontend]'; --web-dir is then not used)")
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--models-dir", default=None, help="default: DATA_DIR/models")
    p.add_argument("--custom-nodes", default=None, help="a folder of extra node modules")
    p.add_argument("--no-builtin-nodes", dest="builtin_nodes", action="store_false",
                   help="load only the --custom-nodes (no torch import; for tests and light tools)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: OMP_NUM_THREADS, else one per physical core); "
                        "OpenMP waits passively unless OMP_WAIT_POLICY is set")
    p.add_argument("--cache-bytes", type=int, default=None, help="cache budget (default: half of RAM, at most 8 GiB)")
    p.add_argument("--verbose-errors", action="store_true")
    ray = p.add_argument_group("Ray (pip install loom[ray]): run the queue on a Ray cluster's workers")
    ray.add_argument("--ray", default=None, metavar="ADDRESS",
                     help="the cluster to use: its address (host:6379, ray://...) or 'auto' (the local node's)")
    ray.add_argument("--ray-resource", default="GPU", metavar="NAME",
                     help="one worker per unit of this resource (default GPU; e.g. a custom 'loom_worker')")
    ray.add_argument("--ray-workers", type=int, default=None, metavar="N",
                     help="number of workers (default: every unit of --ray-resource in the cluster)")
    ray.add_argument("--ray-attempts", type=int, default=3, metavar="N",
                     help="attempts of a prompt whose worker dies before it is marked failed")
    ray.add_argument("--ray-models-dir", default=None, metavar="PATH",
                     help="the models folder on the worker machines (default: the same path as here)")
    ray.add_argument("--ray-threads", type=int, default=None, metavar="N",
                     help="torch CPU threads per worker (default: torch's default, as without --ray)")
    ray.add_argument("--ray-no-affinity", action="store_true",
                     help="route prompts in queue order, ignoring which worker holds their models")
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run one workflow file headless")
    run.add_argument("workflow")
    run.add_argument("--out", default=None, help="folder for the images (default: DATA_DIR/output)")
    add_workflow_commands(sub)
    return p.parse_args(argv)


def add_workflow_commands(sub) -> None:
    wf = sub.add_parser("workflow", help="workflow files: extract from a PNG, check what one needs")
    actions = wf.add_subparsers(dest="action", required=True)
    extract = actions.add_parser("extract", help="write the workflow a PNG made by Loom or ComfyUI carries")
    extract.add_argument("image")
    extract.add_argument("--out", default=None, help="file to write (default: standard output)")
    extract.add_argument("--api", action="store_true", help="the API-format prompt instead of the editor workflow")
    check = actions.add_parser("check", help="list the node types and models a workflow needs that are missing")
    check.add_argument("workflow")


def workflow_command(args: argparse.Namespace) -> int:
    from graph import WorkflowError
    from graph.workflow_cli import check_workflow, extract_workflow
    from loomserver.engine import make_loom

    try:
        if args.action == "extract":
            return extract_workflow(args.image, args.out, args.api)
        return check_workflow(make_loom(args), args.workflow)
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_command(args: argparse.Namespace) -> int:
    from graph import ValidationFailed, WorkflowError, read_workflow_file
    from graph.progress import TqdmProgress
    from loomserver.engine import make_loom

    loom = make_loom(args, output_dir=args.out)
    try:
        workflow = read_workflow_file(args.workflow)
        validation = loom.validate(workflow)
        if not validation.ok:
            raise ValidationFailed(validation)
        result = loom.run(workflow, emit=TqdmProgress(validation.prompt))
    except (WorkflowError, ValidationFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        err = result.error or {}
        print(f"error in node #{err.get('node_id')} {err.get('node_type')}: {err.get('exception_message')}",
              file=sys.stderr)
        return 1
    for path in loom.image_paths(result):
        print(path)
    for node_id, ui in result.outputs.items():  # tables of inspection nodes (ShowTokens, ...)
        for line in ui.get("text", []):
            print(f"#{node_id} {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from graph.threads import configure_threads

    configure_threads(args.threads)  # before torch is imported
    if args.command == "run":
        return run_command(args)
    if args.command == "workflow":
        return workflow_command(args)
    import asyncio

    from loomserver.app import serve
    from loomserver.engine import make_loom

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args, lambda env: make_loom(args, env)))


if __name__ == "__main__":
    sys.exit(main())
