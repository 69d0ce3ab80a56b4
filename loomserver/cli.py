"""Loom's command line (the `loom` command, also `python server.py` in a checkout).

    loom [serve]                         serve the API and the editor (see loom serve --help)
    loom run WORKFLOW.json               run one workflow headless, with a progress bar (JSON or PNG;
                                         a shipped example by name: loom run shapes)
    loom workflow extract IMAGE.png [--out FILE]   the workflow a PNG carries
    loom workflow check WORKFLOW                    what a shared workflow needs

Options go before or after the command (`loom --data-dir D run wf.json` = `loom run wf.json --data-dir D`).
Everything that can be checked without torch (the workflow file, --device, --dtype, the port) is
checked before torch and the nodes load: a mistake is reported at once, with exit status 2.
"""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from pathlib import Path

from .paths import default_data_dir, editor_dir, example_names, shipped_workflow

DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16")


class UsageError(Exception):
    """A problem with the command line or its files: one line on stderr, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with whole option names only (a misspelt one is never taken for another) and one-line
    errors that point to --help instead of printing the whole usage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# --- options ------------------------------------------------------------------------------------
# (flags, argparse keywords). Each group is added to the main parser and again to the commands it
# applies to, there without defaults, so a value given after the command overrides one given before.
ENGINE_OPTIONS = [
    (("--data-dir",), dict(default=None, help="queue, models, input, output (default: ./data in a checkout, "
                                               "else the per-user data folder, e.g. ~/.local/share/loom)")),
    (("--models-dir",), dict(default=None, help="default: DATA_DIR/models")),
    (("--custom-nodes",), dict(default=None, help="a folder of extra node modules")),
    (("--no-builtin-nodes",), dict(dest="builtin_nodes", action="store_false", default=True,
                                   help="load only the --custom-nodes (no torch import; for tests and light tools)")),
    (("--device",), dict(default="auto", help="auto, cpu, cuda, cuda:1, mps ...")),
    (("--dtype",), dict(default="auto", help="auto, float32, float16, bfloat16")),
    (("--threads",), dict(type=int, default=None, metavar="N",
                          help="torch CPU threads (default: OMP_NUM_THREADS, else one per physical core); "
                               "OpenMP waits passively unless OMP_WAIT_POLICY is set")),
    (("--cache-bytes",), dict(type=int, default=None, help="cache budget (default: half of RAM, at most 8 GiB)")),
    (("--vram-bytes",), dict(type=int, default=None, help="GPU budget of cached models and tensors; least recently "
                             "used models move to RAM (default: free GPU memory minus a margin)")),
    (("--compile",), dict(action="store_true", default=False, help="torch.compile the UNet (first image much slower)")),
    (("--verbose-errors",), dict(action="store_true", default=False)),
]
SERVER_OPTIONS = [
    (("--listen",), dict(default="127.0.0.1", help="address to bind; not loopback requires a token")),
    (("--port",), dict(type=int, default=8188, help="0 picks a free port (printed at start)")),
    (("--auth-token",), dict(default=None, help="token clients must send (default: none on loopback, "
                                                "generated and printed otherwise)")),
    (("--cors-origin",), dict(action="append", default=[], metavar="ORIGIN",
                              help="allow cross-origin browser requests from ORIGIN (repeatable; '*' for any)")),
    (("--ready-wait",), dict(type=float, default=15.0, metavar="SECONDS",
                             help="how long /prompt and /object_info wait for the nodes to load before answering 503")),
    (("--web-dir",), dict(default=None, help="the editor's files, served at / (default: the installed editor)")),
    (("--frontend",), dict(choices=("loom", "comfyui"), default="loom",
                           help="the editor served at /: Loom's (--web-dir), or ComfyUI's official frontend "
                                "(pip install 'loom-diffusion[comfyui-frontend]'; --web-dir is then not used)")),
    (("--preview-method",), dict(choices=("none", "auto", "latent2rgb", "taesd"), default="none",
                                 help="latent previews for prompts that do not choose (extra_data.preview_method), "
                                      "as ComfyUI's")),
]
RAY_OPTIONS = [
    (("--ray",), dict(default=None, metavar="ADDRESS",
                      help="the cluster to use: its address (host:6379, ray://...) or 'auto' (the local node's)")),
    (("--ray-resource",), dict(default="GPU", metavar="NAME",
                               help="one worker per unit of this resource (default GPU; e.g. a custom 'loom_worker')")),
    (("--ray-workers",), dict(type=int, default=None, metavar="N",
                              help="number of workers (default: every unit of --ray-resource in the cluster)")),
    (("--ray-attempts",), dict(type=int, default=3, metavar="N",
                               help="attempts of a prompt whose worker dies before it is marked failed")),
    (("--ray-models-dir",), dict(default=None, metavar="PATH",
                                 help="the models folder on the worker machines (default: the same path as here)")),
    (("--ray-threads",), dict(type=int, default=None, metavar="N",
                              help="torch CPU threads per worker (default: torch's default, as without --ray)")),
    (("--ray-no-affinity",), dict(action="store_true", default=False,
                                  help="route prompts in queue order, ignoring which worker holds their models")),
]
RAY_TITLE = "Ray (pip install 'loom-diffusion[ray]'): run the queue on a Ray cluster's workers"


def _add(parser, options, after: bool) -> None:
    for flags, kwargs in options:
        parser.add_argument(*flags, **({**kwargs, "default": argparse.SUPPRESS} if after else kwargs))


def _add_server(parser, after: bool) -> None:
    _add(parser, SERVER_OPTIONS, after)
    _add(parser.add_argument_group(RAY_TITLE), RAY_OPTIONS, after)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    _add(p, ENGINE_OPTIONS, after=False)
    _add_server(p, after=False)
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the API and the editor (the default command)")
    _add(serve, ENGINE_OPTIONS, after=True)
    _add_server(serve, after=True)
    run = sub.add_parser("run", help="run one workflow file headless")
    run.add_argument("workflow")
    run.add_argument("--out", default=None, help="folder for the images (default: DATA_DIR/output)")
    _add(run, ENGINE_OPTIONS, after=True)
    wf = sub.add_parser("workflow", help="workflow files: extract from a PNG, check what one needs")
    actions = wf.add_subparsers(dest="action", required=True)
    extract = actions.add_parser("extract", help="write the workflow a PNG made by Loom or ComfyUI carries")
    extract.add_argument("image")
    extract.add_argument("--out", default=None, help="file to write (default: standard output)")
    extract.add_argument("--api", action="store_true", help="the API-format prompt instead of the editor workflow")
    check = actions.add_parser("check", help="list the node types and models a workflow needs that are missing")
    check.add_argument("workflow")
    _add(check, ENGINE_OPTIONS, after=True)
    return p


def _scope(parser: argparse.ArgumentParser) -> tuple[dict[str, bool], dict]:
    """(option -> whether it takes a value, command -> its parser) of one parser."""
    options = {flag: action.nargs != 0 for action in parser._actions for flag in action.option_strings}
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    return options, commands


def check_option_names(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuses the first option that the command line's parser (the main one, then the command's) does
    not know, with the closest known name. Done before argparse parses: it would take the next word
    as the option's value and then name the workflow path as the argument it does not recognise."""
    options, commands = _scope(parser)
    words = iter(argv)
    for word in words:
        if word == "--":
            return
        if word.startswith("-") and len(word) > 1 and not word.lstrip("-").replace(".", "", 1).isdigit():
            name = word.split("=", 1)[0]
            if name not in options:
                close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
                parser.error(f"unknown option {name}" + (f"; did you mean {close[0]}?" if close else ""))
            if options[name] and "=" not in word:
                next(words, None)  # its value
        elif word in commands:
            parser = commands[word]
            options, commands = _scope(parser)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    check_option_names(parser, argv)
    args = parser.parse_args(argv)
    args.command = args.command or "serve"
    args.data_dir = str(Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir())
    if getattr(args, "web_dir", None) is None:
        args.web_dir = str(editor_dir())
    return args


# --- checks before anything heavy loads ----------------------------------------------------------
def check_device(args: argparse.Namespace) -> None:
    """--device and --dtype: their spelling at once; a CUDA device is looked for here (torch loads
    now rather than later) unless the queue runs on Ray workers, whose devices are theirs."""
    if not DEVICE.match(args.device):
        raise UsageError(f"--device {args.device!r}: expected auto, cpu, cuda, cuda:N or mps")
    if args.dtype not in DTYPES:
        raise UsageError(f"--dtype {args.dtype!r}: expected one of {', '.join(DTYPES)}")
    if getattr(args, "ray", None) or not args.builtin_nodes or args.device in ("auto", "cpu"):
        return
    import torch

    kind, _, index = args.device.partition(":")
    backend = getattr(torch, kind, None) if kind != "mps" else getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        raise UsageError(f"--device {args.device}: this machine has no {kind.upper()} device that torch "
                         f"{torch.__version__} can use; use --device cpu (or auto)")
    if index and kind != "mps" and int(index) >= backend.device_count():
        raise UsageError(f"--device {args.device}: there are only {backend.device_count()} {kind.upper()} device(s)")


def locate_workflow(path: str) -> str:
    """`path` when it exists, else the shipped example it names (`loom run shapes` on an installed Loom)."""
    if Path(path).exists():
        return path
    shipped = shipped_workflow(path)
    if shipped is None:
        raise UsageError(f"cannot read {path}: no such file, nor a shipped example of that name "
                         f"(the examples: {', '.join(example_names())})")
    print(f"the shipped example {shipped}", file=sys.stderr)
    return str(shipped)


def read_workflow(path: str):
    """The workflow in a file, checked against the format's schema (the nodes are not needed for that)."""
    if not Path(path).is_file():  # before importing anything
        raise UsageError(f"cannot read {path}: {'it is a folder' if Path(path).is_dir() else 'no such file'}")
    from graph import WorkflowError, read_workflow_file
    from graph.workflow import check, kind_of

    try:
        data = read_workflow_file(path)
        check(data, kind_of(data))
    except WorkflowError as exc:
        raise UsageError(str(exc)) from None
    return data


# --- commands -----------------------------------------------------------------------------------
def workflow_command(args: argparse.Namespace) -> int:
    from graph import WorkflowError
    from graph.workflow_cli import check_workflow, extract_workflow

    from .engine import make_loom

    try:
        if args.action == "extract":
            return extract_workflow(args.image, args.out, args.api)
        args.workflow = locate_workflow(args.workflow)
        read_workflow(args.workflow)
        return check_workflow(make_loom(args), args.workflow)
    except WorkflowError as exc:
        raise UsageError(str(exc)) from None


def run_command(args: argparse.Namespace) -> int:
    from graph import ValidationFailed
    from graph.progress import TqdmProgress

    from .engine import make_loom

    args.workflow = locate_workflow(args.workflow)
    workflow = read_workflow(args.workflow)
    loom = make_loom(args, output_dir=args.out)
    validation = loom.validate(workflow)
    if not validation.ok:
        raise UsageError(str(ValidationFailed(validation)))
    result = loom.run(validation, emit=TqdmProgress(validation.prompt))
    for node_id, ui in result.outputs.items():  # what a node found wrong with its inputs (a prompt's unknown words)
        for line in ui.get("warnings", []):
            print(f"warning: #{node_id} {validation.prompt[node_id]['class_type']}: {line}", file=sys.stderr)
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


def serve_command(args: argparse.Namespace) -> int:
    import asyncio

    from .app import StartError, check_port, serve
    from .engine import make_loom

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_port(args.listen, args.port)
        return asyncio.run(serve(args, lambda env: make_loom(args, env)))
    except StartError as exc:
        raise UsageError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from graph.threads import configure_threads

    try:
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads {args.threads}: give at least 1")
        configure_threads(args.threads)  # before torch is imported
        if args.command == "workflow" and args.action == "extract":
            return workflow_command(args)
        check_device(args)
        command = {"run": run_command, "workflow": workflow_command, "serve": serve_command}[args.command]
        code = command(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if argv is None and args.command == "run":
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End a `loom run` process without Python's teardown, which frees every module, model and
    tensor one by one (~1 CPU-s, an eighth of a small run, once torch and diffusers are loaded).
    Its files are written and closed by then; the output streams and logs are flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
