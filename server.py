"""Loom's server and command line.

    python server.py                     serve the API and the editor (see --help)
    python server.py run WORKFLOW.json   run one workflow headless, with a progress bar (JSON or PNG)
    python server.py workflow extract IMAGE.png [--out FILE]   the workflow a PNG carries
    python server.py workflow check WORKFLOW                    what a shared workflow needs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="server.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--models-dir", default=None, help="default: DATA_DIR/models")
    p.add_argument("--custom-nodes", default=None, help="a folder of extra node modules")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto, float32, float16, bfloat16")
    p.add_argument("--cache-bytes", type=int, default=None, help="cache budget (default: half of RAM, at most 8 GiB)")
    p.add_argument("--verbose-errors", action="store_true")
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

    try:
        if args.action == "extract":
            return extract_workflow(args.image, args.out, args.api)
        return check_workflow(make_loom(args), args.workflow)
    except WorkflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def make_loom(args: argparse.Namespace, output_dir: str | None = None):
    from graph import Env, Loom

    env = Env.from_data_dir(args.data_dir, args.models_dir, device=args.device, dtype=args.dtype)
    if output_dir:
        env.output_dir = Path(output_dir).resolve()
        env.output_dir.mkdir(parents=True, exist_ok=True)
    return Loom(env, custom_nodes=args.custom_nodes, cache_bytes=args.cache_bytes, verbose_errors=args.verbose_errors)


def run_command(args: argparse.Namespace) -> int:
    from graph import ValidationFailed, WorkflowError, read_workflow_file
    from graph.progress import TqdmProgress

    loom = make_loom(args, args.out)
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
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "workflow":
        return workflow_command(args)
    print("the HTTP server is not built yet; use `python server.py run WORKFLOW.json`", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
