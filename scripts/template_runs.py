"""Which of ComfyUI's current local image templates run end to end on Loom with tiny models.

The set is scripts/template_coverage.py's: the 150 local (non-API) image templates of
comfyui-workflow-templates-json 0.1.123. Each template is

1. loaded through Loom's workflow loader (graph.formats.load: frontend format, subgraphs expanded,
   PrimitiveNodes, muted and bypassed nodes resolved) into the API prompt the frontend would queue;
2. put in a model family: by its `models` tags in index.json (the issue's counts), else by its
   denoiser's file name; a family counts as Loom's when a family of nodes.families loads ComfyUI's
   loader `type` of it (Z-Image: lumina2, Flux.1: flux, ...) or has its name (SDXL);
3. given tiny random models under exactly the file names its loader nodes ask for (every input a node
   declares as a model file: ckpt_name, unet_name, clip_name*, vae_name, lora_name, ...), in a models
   folder of its own: the family runtime's `write_tiny_files` (nodes.families.spec.Runtime), each asked
   file a link to the family's file of the same folder and most similar name; SD-family checkpoints
   from nodes.loading.tiny as single files; LoRAs made on the tiny denoiser's layers;
4. shrunk (sizes to at most 64 px, 2 steps, batch 1) and queued on an in-process Loom.

A template that lacks node types, or whose family Loom does not load, is reported without running.

    python scripts/template_runs.py [--only NAME_OR_FAMILY ...] [--report docs/template-status.md]

prints a table per family and writes the markdown report (docs/template-status.md is this output).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph import Env, Loom, Registry  # noqa: E402
from graph.formats import load  # noqa: E402
from graph.links import is_link  # noqa: E402
from graph.node import model_files  # noqa: E402

from scripts.template_coverage import default_templates, image_templates  # noqa: E402

# The table's families, in the order the report lists them: (label, the ComfyUI loader `type` that
# names the family (or Loom's family name), a test of a template's index.json tag, a denoiser file name).
FAMILIES = (
    ("Z-Image", "lumina2", lambda t: t.startswith("Z-Image"), r"z[-_]?image"),
    ("Flux.1", "flux", lambda t: t.startswith("FLUX.1"), r"flux1|flux-1|flux_1|flux_dev|flux_schnell"),
    ("SD3.5", "sd3", lambda t: t.startswith("SD3"), r"sd3"),
    ("Qwen-Image", "qwen_image", lambda t: t.startswith("Qwen"), r"qwen[-_]?image"),
    ("Flux.2", "flux2", lambda t: t.startswith("FLUX.2"), r"flux2|flux-2"),
    ("HiDream", "hidream", lambda t: t.startswith("HiDream"), r"hidream"),
    ("Chroma", "chroma", lambda t: t.startswith("Chroma"), r"chroma"),
    ("SDXL", "sdxl", lambda t: t.startswith("SDXL"), r"sd_xl|sdxl"),
)
OTHER = "other"
LABELS = tuple(f[0] for f in FAMILIES) + (OTHER,)
SD_FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
DENOISER_KINDS = ("checkpoints", "diffusion_models", "unet")
SAME_FOLDER = {"unet": "diffusion_models", "clip": "text_encoders"}  # ComfyUI's older folder names
SIZE = 64  # the longest side of a shrunk image or latent, in pixels
LORA_RANK = 4


@dataclass
class Outcome:
    name: str
    family: str  # a LABELS entry
    missing: list[str] = field(default_factory=list)  # node types Loom lacks
    status: str = "not run"  # "ran", "failed" or "not run"
    detail: str = ""  # why it failed or was not run; what it made when it ran
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.missing


# --- families --------------------------------------------------------------------------------------

def template_family(tags: list[str], denoisers: list[str]) -> str:
    """The table family of a template: its first tag that names one, else its denoiser files' names."""
    for tag in tags:
        for label, _, is_tag, _ in FAMILIES:
            if is_tag(tag) and not (label == "Flux.1" and any(t.startswith("Chroma") for t in tags)):
                return label
    for name in denoisers:
        label = label_of_file(name)
        if label:
            return label
    return OTHER


def label_of_file(name: str) -> str | None:
    low = name.lower()
    return next((label for label, _, _, pattern in FAMILIES if re.search(pattern, low)), None)


def loom_family(label: str, denoiser: str | None = None) -> str | None:
    """Loom's family (nodes.families) for a table family, or None: the one whose ComfyUI loader types
    hold the label's type (several: the one named in the denoiser's file name, else the first)."""
    from nodes.families import all_families

    if label == OTHER:
        return None
    key = next(f[1] for f in FAMILIES if f[0] == label)
    if label == "SDXL":
        return sd_family_of_name(denoiser or "") or "sdxl"
    found = [f.name for f in all_families() if key in f.clip_types]
    named = [f for f in found if denoiser and f.lower() in denoiser.lower()]
    return (named or found or [None])[0]


def sd_family_of_name(name: str) -> str | None:
    low = name.lower()
    if "xl" in low:
        return "sdxl_refiner" if "refiner" in low else "sdxl"
    return None


# --- tiny models -----------------------------------------------------------------------------------

class TinyModels:
    """Each family's tiny files, written once into a staging folder, linked into a template's folder."""

    def __init__(self, root: Path):
        self.root = root
        self.staged: dict[str, dict[str, Path]] = {}  # family -> {relative path: file}

    def files(self, family: str) -> dict[str, Path]:
        if family not in self.staged:
            self.staged[family] = self._write(family, self.root / family)
        return self.staged[family]

    def _write(self, family: str, folder: Path) -> dict[str, Path]:
        from nodes.families import runtime_of

        runtime = runtime_of(family)
        if runtime is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                runtime.write_tiny_files(folder, seed=0)
        elif family in SD_FAMILIES:
            write_sd_checkpoint(family, folder)
        return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}

    def provide(self, family: str, kind: str, name: str, models: Path) -> str | None:
        """Link the family's file for `kind`/`name` into `models`; None, or why there is none."""
        dest = models / kind / name
        if dest.exists():
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        if kind == "loras":  # the family's own tiny LoRA when it writes one, else one made on its denoiser
            source = self.pick(family, kind, name) or self.lora(family)
        elif kind == "upscale_models":
            source = self.upscaler()
        else:
            source = self.pick(family, kind, name)
        if source is None:
            return f"no tiny {family} model for {kind}/{name}"
        try:
            os.link(source, dest)
        except OSError:
            shutil.copy2(source, dest)
        for extra in self.folders(family):  # tokenizers the family keeps beside its files
            if not (dest.parent / extra.name).exists():
                shutil.copytree(extra, dest.parent / extra.name)
        return None

    def folders(self, family: str) -> list[Path]:
        """The folders (not model files) a family's writer put beside its files, e.g. tokenizers."""
        root = self.root / family
        if family not in self.staged or not root.is_dir():
            return []
        return [d for kind in root.iterdir() if kind.is_dir() for d in kind.iterdir() if d.is_dir()]

    def pick(self, family: str, kind: str, name: str) -> Path | None:
        files = self.files(family)
        kind = SAME_FOLDER.get(kind, kind)
        here = {rel: p for rel, p in files.items() if SAME_FOLDER.get(rel.split("/")[0], rel.split("/")[0]) == kind
                and p.suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")}
        if not here:
            return None
        if f"{kind}/{name}" in here:
            return here[f"{kind}/{name}"]
        return max(here.items(), key=lambda kv: difflib.SequenceMatcher(None, Path(kv[0]).name, name).ratio())[1]

    def lora(self, family: str) -> Path | None:
        path = self.root / f"{family}.lora.safetensors"
        if not path.exists():
            denoiser = next((p for rel, p in self.files(family).items()
                             if rel.split("/")[0] in DENOISER_KINDS and p.suffix == ".safetensors"), None)
            if denoiser is None:
                return None
            write_lora(denoiser, path)
        return path

    def upscaler(self) -> Path:
        path = self.root / "tiny_esrgan.safetensors"
        if not path.exists():
            from safetensors.torch import save_file

            from tests._tiny_assets import tiny_esrgan_state

            save_file(tiny_esrgan_state(seed=0, identity=True), str(path))
        return path


def write_sd_checkpoint(family: str, folder: Path) -> None:
    """An SD-family tiny model as a single checkpoint file (nodes.loading.tiny's diffusers folder,
    written in the LDM/SGM layout)."""
    from nodes.loading.ldm_layout import write_single_file
    from nodes.loading.tiny import write_tiny_model

    diffusers_folder = write_tiny_model(folder.parent / f"{family}-diffusers", family=family)
    write_single_file(diffusers_folder, folder / "checkpoints" / f"tiny-{family}.safetensors", family)


def write_lora(denoiser: Path, path: Path) -> None:
    """A LoRA of ComfyUI's common layout (`diffusion_model.<layer>.lora_A/.lora_B.weight`) on the first
    linear layers of a tiny denoiser file, random and small."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    state = {}
    with safe_open(str(denoiser), "pt") as f:
        keys = [k for k in f.keys() if k.endswith(".weight") and len(f.get_slice(k).get_shape()) == 2]
        for key in keys[:8]:
            out, inp = f.get_slice(key).get_shape()
            layer = "diffusion_model." + key.removeprefix("model.diffusion_model.").removesuffix(".weight")
            state[f"{layer}.lora_A.weight"] = torch.randn(LORA_RANK, inp, generator=generator) * 0.01
            state[f"{layer}.lora_B.weight"] = torch.randn(out, LORA_RANK, generator=generator) * 0.01
    save_file(state, str(path))


# --- the prompt, small -----------------------------------------------------------------------------

def shrink(prompt: dict, registry: Registry) -> dict:
    """Sizes to at most SIZE px (aspect kept, multiples of 16, at least 32), steps to 2, batch to 1,
    never below an input's declared minimum; a size or step count given by a linked primitive is
    shrunk at the primitive."""
    for node in prompt.values():
        inputs = node["inputs"]
        cls = registry.get(node["class_type"])
        _shrink_size(prompt, inputs)
        steps = _value(prompt, inputs, "steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 2:
            for key in ("start_at_step", "end_at_step"):
                if isinstance(inputs.get(key), int):
                    inputs[key] = min(2, round(inputs[key] * 2 / steps))
            _set(prompt, inputs, "steps", 2)
        for key, cap in (("batch_size", 1), ("length", 1), ("largest_size", SIZE), ("longer_size", SIZE),
                         ("resize_type.longer_size", SIZE), ("megapixels", 0.004), ("minimum", 32)):
            value = _value(prompt, inputs, key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                declared = cls.inputs.get(key) if cls is not None else None
                low = getattr(declared, "min", None)
                _set(prompt, inputs, key, max(cap, low) if isinstance(low, (int, float)) else cap)
    return prompt


def _shrink_size(prompt: dict, inputs: dict) -> None:
    for wkey, hkey in (("width", "height"), ("resize_type.width", "resize_type.height"),
                       ("target_width", "target_height")):
        w, h = _value(prompt, inputs, wkey), _value(prompt, inputs, hkey)
        sides = [v for v in (w, h) if isinstance(v, int) and not isinstance(v, bool)]
        if not sides or max(sides) <= SIZE:
            continue
        scale = SIZE / max(sides)
        for key, v in ((wkey, w), (hkey, h)):
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                _set(prompt, inputs, key, max(32, round(v * scale / 16) * 16))


def _value(prompt: dict, inputs: dict, key: str):
    """An input's value, followed through links to a primitive node's value."""
    value = inputs.get(key)
    if is_link(value):
        source = prompt.get(str(value[0]), {})
        if source.get("class_type", "").startswith("Primitive") and "value" in source.get("inputs", {}):
            return source["inputs"]["value"]
        return None
    return value


def _set(prompt: dict, inputs: dict, key: str, new) -> None:
    value = inputs.get(key)
    if is_link(value):
        prompt[str(value[0])]["inputs"]["value"] = new
    else:
        inputs[key] = new


def write_inputs(prompt: dict, input_dir: Path) -> None:
    """Pictures under the names LoadImage-like nodes ask for: random 64 px RGBA, half transparent (a mask)."""
    import numpy as np
    from PIL import Image

    for node in prompt.values():
        for key in ("image", "mask"):
            name = node["inputs"].get(key)
            if not isinstance(name, str) or not name.lower().endswith((".png", ".jpg", ".jpeg", ".webp")):
                continue
            path = input_dir / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                rgba = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 4), dtype=np.uint8)
                rgba[..., 3] = np.where(np.arange(SIZE)[:, None] < SIZE // 2, 255, 0)
                picture = Image.fromarray(rgba, "RGBA")
                (picture if path.suffix.lower() in (".png", ".webp") else picture.convert("RGB")).save(path)


# --- one template ----------------------------------------------------------------------------------

def asked_models(prompt: dict, registry: Registry) -> list[tuple[str, str]]:
    """(folder kind, file name) of every model file the prompt's loader nodes ask for."""
    asked = []
    for inputs in model_files(prompt, registry).values():
        for kind, value in inputs.values():
            if isinstance(value, str) and value and (kind, value) not in asked:
                asked.append((kind, value))
    return asked


def classify(workflow: dict, tags: list[str], registry: Registry) -> str:
    """The table family of a template (without running it)."""
    asked = asked_models(load(workflow, registry).prompt, registry)
    return template_family(tags, [n for kind, n in asked if kind in DENOISER_KINDS])


def measure(name: str, workflow: dict, tags: list[str], registry: Registry, tiny: TinyModels,
            work: Path, run: bool = True) -> Outcome:
    prompt = load(workflow, registry).prompt
    asked = asked_models(prompt, registry)
    denoisers = [n for kind, n in asked if kind in DENOISER_KINDS]
    outcome = Outcome(name, template_family(tags, denoisers))
    outcome.missing = sorted({n["class_type"] for n in prompt.values() if n["class_type"] not in registry})
    if outcome.missing:
        outcome.detail = "lacks " + ", ".join(outcome.missing)
        return outcome
    family = loom_family(outcome.family, denoisers[0] if denoisers else None)
    if family is None and asked:
        outcome.detail = f"Loom has no {outcome.family if outcome.family != OTHER else 'family for these models'}" \
                         f" ({', '.join(tags) or 'no tags'})"
        return outcome
    if not run:
        return outcome
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=re.sub(r"\W", "_", name)[:40] + "-", dir=work))
    try:
        models = folder / "models"
        for kind, file in asked:
            why = tiny.provide(family_for_file(outcome.family, family, kind, file), kind, file, models)
            if why:
                outcome.status, outcome.detail = "failed", why
                return outcome
        env = Env.from_data_dir(folder / "data", models_dir=models, device="cpu", dtype="float32")
        loom = Loom(env, registry=registry)
        shrink(prompt, registry)
        write_inputs(prompt, env.input_dir)
        outcome.status, outcome.detail = run_prompt(loom, prompt, workflow)
    except Exception as exc:  # noqa: BLE001 - the report names any failure
        outcome.status, outcome.detail = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        outcome.seconds = time.perf_counter() - started
        shutil.rmtree(folder, ignore_errors=True)
    return outcome


def family_for_file(label: str, family: str | None, kind: str, file: str) -> str:
    """The family whose tiny file stands in for `file`: the template's, unless a denoiser's name says
    another family Loom has."""
    if kind in DENOISER_KINDS:
        other = label_of_file(file)
        if other and other != label:
            return loom_family(other, file) or family
    return family or sd_family_of_name(file) or "sd1"


class Heard(logging.Handler):
    """diffusers' warnings during a run (a LoRA file with nothing for the model is only a warning)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def run_prompt(loom: Loom, prompt: dict, workflow: dict) -> tuple[str, str]:
    validation = loom.validate(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    if not validation.ok:
        return "failed", "invalid: " + first_validation_error(validation)
    heard, logger = Heard(), logging.getLogger("diffusers")
    logger.addHandler(heard)
    try:
        result = loom.run(validation)
    finally:
        logger.removeHandler(heard)
    if not result.ok:
        error = result.error or {}
        return "failed", f"node {error.get('node_id')} {error.get('node_type')}: {error.get('exception_message')}"
    images = [path for path in loom.image_paths(result) if path.is_file()]
    made = f"{len(images)} image{'s' if len(images) != 1 else ''}"
    if any(line.startswith("No LoRA keys") for line in heard.lines):
        made += "; its LoRA changed nothing (Loom's LoRA loading reads no keys for this family's model)"
    return "ran", made


def first_validation_error(validation) -> str:
    for node_id, entry in (validation.node_errors or {}).items():
        for error in entry.get("errors", []):
            return f"node {node_id} {entry.get('class_type')}: {error.get('message')} {error.get('details', '')}".strip()
    error = validation.error or {}
    return f"{error.get('message')} {error.get('details', '')}".strip()


# --- all of them -----------------------------------------------------------------------------------

def template_tags(folder: Path) -> dict[str, list[str]]:
    tags = {}
    for category in json.loads((folder / "index.json").read_text(encoding="utf-8")):
        if category.get("type") == "image":
            for template in category["templates"]:
                tags.setdefault(template["name"], [t for t in template.get("models") or [] if t != "None"])
    return tags


def measure_all(folder: Path | None = None, only: list[str] | None = None, run: bool = True,
                log=None) -> list[Outcome]:
    folder = folder or default_templates()
    registry = Registry()
    registry.add_package("nodes")
    tags = template_tags(folder)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="template-runs-") as tmp:
        tiny = TinyModels(Path(tmp) / "tiny")
        for name in image_templates(folder):
            workflow = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
            if only and name not in only and classify(workflow, tags.get(name, []), registry) not in only:
                continue
            outcome = measure(name, workflow, tags.get(name, []), registry, tiny, Path(tmp), run)
            outcomes.append(outcome)
            if log:
                log(f"{outcome.family:10} {outcome.status:8} {outcome.seconds:5.1f}s {name}: {outcome.detail}"[:300])
    return outcomes


def summary_rows(outcomes: list[Outcome]) -> list[tuple[str, int, int, int]]:
    rows = []
    for label in LABELS:
        mine = [o for o in outcomes if o.family == label]
        rows.append((label, len(mine), sum(o.complete for o in mine), sum(o.status == "ran" for o in mine)))
    rows.append(("all", len(outcomes), sum(o.complete for o in outcomes), sum(o.status == "ran" for o in outcomes)))
    return rows


def report(outcomes: list[Outcome], commit: str = "") -> str:
    lines = ["# ComfyUI's current templates on Loom, run on tiny models", "",
             "Generated by `scripts/template_runs.py` (regenerate: `.venv/bin/python scripts/template_runs.py "
             "--report docs/template-status.md`; families measured on other checkouts: `--json` there, then "
             "`--combine`)" + (f", measured on {commit}" if commit else "") + ". The set: the "
             f"{len(outcomes)} local image templates of comfyui-workflow-templates-json 0.1.123 "
             "(`scripts/template_coverage.py`'s). Each is loaded as the frontend would queue it, given tiny random "
             "models under the file names it asks for, shrunk (64 px, 2 steps, batch 1) and run on an in-process "
             "Loom. Family: by the template's index.json tags, else its denoiser's file name. *Node-complete*: "
             "Loom has every node type it uses. *Ran*: it ran to its end. A template whose family Loom does not "
             "load is not run.", "",
             "| family | templates | node-complete | ran |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {n} | {complete} | {ran} |" for label, n, complete, ran in summary_rows(outcomes)]
    lacking = Counter(t for o in outcomes if o.family != OTHER for t in o.missing)
    if lacking:
        lines += ["", "Node types the family templates (all but *other*) lack, by the number of templates: " +
                  ", ".join(f"`{t}` {n}" for t, n in sorted(lacking.items(), key=lambda kv: (-kv[1], kv[0]))) + "."]
    for label in LABELS:
        mine = [o for o in outcomes if o.family == label]
        if not mine:
            continue
        lines += ["", f"## {label}", "", "| template | node-complete | status | detail |", "|---|---|---|---|"]
        for o in sorted(mine, key=lambda o: ({"ran": 0, "failed": 1}.get(o.status, 2), o.name)):
            detail = o.detail.replace("|", "\\|").replace("\n", " ")[:240]
            lines.append(f"| `{o.name}` | {'yes' if o.complete else 'no'} | {o.status} | {detail} |")
    return "\n".join(lines) + "\n"


def table(outcomes: list[Outcome]) -> str:
    out = []
    for label in LABELS:
        mine = [o for o in outcomes if o.family == label]
        if not mine:
            continue
        ran = sum(o.status == "ran" for o in mine)
        out.append(f"{label}: {len(mine)} templates, {sum(o.complete for o in mine)} node-complete, {ran} ran")
        for o in sorted(mine, key=lambda o: ({"ran": 0, "failed": 1}.get(o.status, 2), o.name)):
            out.append(f"  {o.status:8} {o.name}: {o.detail}"[:220])
    out.append("\n".join(f"{label:10} {n:4} {complete:4} {ran:4}" for label, n, complete, ran in summary_rows(outcomes)))
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--templates", type=Path, help="the templates folder (default: the installed package's)")
    parser.add_argument("--only", nargs="*", help="template names or family labels (Z-Image, SDXL, other, ...)")
    parser.add_argument("--report", type=Path, help="write the markdown report here")
    parser.add_argument("--no-run", action="store_true", help="classify only; run nothing")
    parser.add_argument("--verbose", action="store_true", help="a line per template as it is measured")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="run nothing: the report of outcomes written by --json runs (for families measured on "
                             "different checkouts; a template's last outcome counts)")
    parser.add_argument("--measured-on", default="", help="what the report says was measured (default: HEAD)")
    args = parser.parse_args(argv)
    commit = args.measured_on or os.popen("git rev-parse --short HEAD 2>/dev/null").read().strip()
    if args.combine:
        found = {}
        for path in args.combine:
            for entry in json.loads(path.read_text(encoding="utf-8")):
                found[entry["name"]] = Outcome(**entry)
        outcomes = list(found.values())
        print(table(outcomes))
        if args.report:
            args.report.write_text(report(outcomes, commit), encoding="utf-8")
        return 0
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    outcomes = measure_all(args.templates, args.only, not args.no_run,
                           (lambda line: print(line, flush=True)) if args.verbose else None)
    print(table(outcomes))
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1), encoding="utf-8")
    if args.report:
        args.report.write_text(report(outcomes, commit), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
