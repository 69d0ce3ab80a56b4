"""Test helpers for the Stable Diffusion nodes: a Loom on a models folder, workflows, pipelines."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch

from graph import Env, Loom

ROOT = Path(__file__).resolve().parent.parent
STEPS, CFG, SEED = 20, 7.5, 42


def pin_threads() -> None:
    """Same thread count for the pipeline and the nodes: reductions split differently otherwise.
    One thread: the test machine's cores are shared, and oversubscribed threads are very slow."""
    torch.set_num_threads(1)


def make_loom(data_dir: Path, models_dir: Path) -> Loom:
    return Loom(Env.from_data_dir(data_dir, models_dir=models_dir, device="cpu", dtype="float32"))


def workflow(name: str, **changes) -> dict:
    """workflows/<name>.json with `{node_id: {input: value}}` changes applied."""
    wf = json.loads((ROOT / "workflows" / f"{name}.json").read_text())
    for node_id, inputs in changes.items():
        wf[node_id]["inputs"].update(inputs)
    return copy.deepcopy(wf)


def run_node(loom: Loom, wf: dict, node: str = "9"):
    """Run `wf` up to `node` and return that node's first output."""
    validation = loom.validate(wf, outputs=[node])
    assert validation.ok, validation.response()
    result = loom.run(validation)
    assert result.ok, result.error
    return result.values[node][0]


def prompts(wf: dict) -> tuple[str, str]:
    return wf["2"]["inputs"]["text"], wf["3"]["inputs"]["text"]


def pipeline_scheduler(config, kind: str):
    """The scheduler a diffusers user would set for `kind`, built from the checkpoint's config."""
    import diffusers

    classes = {"ddim": ("DDIMScheduler", {}), "pndm": ("PNDMScheduler", {}), "euler": ("EulerDiscreteScheduler", {}),
               "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
               "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
               "dpmpp_2m_karras": ("DPMSolverMultistepScheduler",
                                   {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
               "ddpm": ("DDPMScheduler", {}), "lms": ("LMSDiscreteScheduler", {}), "heun": ("HeunDiscreteScheduler", {}),
               "unipc": ("UniPCMultistepScheduler", {})}
    name, extra = classes[kind]
    return getattr(diffusers, name).from_config(config, **extra)


def as_array(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().numpy()
