"""A prompt the model cannot read as written is reported on its node: words the tokenizer has no
whole-word token for ("a cat" on shapes64 drew a purple square, silently) and text past 77 tokens.
The warning travels as the node's UI output `warnings`: the `executed` event (the editor marks the
node), the history, and `loom run`'s output."""
import json
import subprocess
import sys

import pytest

from graph import Env, Loom
from nodes.common import asset_dir
from nodes.text import prompt_warnings
from tests._sd import workflow
from tests.server_harness import ROOT


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(asset_dir("textcond") / "shapes64" / "tokenizer")


def test_unknown_words_are_named_with_their_pieces(tokenizer):
    assert prompt_warnings(tokenizer, "a red circle") == []
    assert prompt_warnings(tokenizer, "A Blue ring, on a black background!") == []
    (warning,) = prompt_warnings(tokenizer, "a cat in a hat, a cat")
    assert warning == "2 word(s) not in the model's vocabulary, read as pieces it may never have seen: cat (ca+t), hat (h+a+t)"


def test_text_past_77_tokens_is_reported_cut(tokenizer):
    fits = " ".join(["red"] * 75)  # 75 words + start and end = 77 tokens
    assert prompt_warnings(tokenizer, fits) == []
    (warning,) = prompt_warnings(tokenizer, fits + " circle square")
    assert warning == 'the prompt is 79 tokens, the model reads 77: "circle square" is cut off'


@pytest.fixture(scope="module")
def loom(tmp_path_factory):
    from nodes.textcond import model as tm

    models = tmp_path_factory.mktemp("models")
    tm.install_shipped(models)
    return Loom(Env.from_data_dir(tmp_path_factory.mktemp("warnings"), models_dir=models, device="cpu",
                                  dtype="float32"))


def test_comfyui_and_loom_text_nodes_both_report(loom):
    """CLIPTextEncode (ComfyUI's) and Tokenize (Loom's) share the check; the warning is the node's UI output."""
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "shapes64"}},
          "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat"}},
          "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red circle"}},
          "4": {"class_type": "LoadCheckpoint", "inputs": {"model": "shapes64"}},
          "5": {"class_type": "Tokenize", "inputs": {"tokenizer": ["4", 0], "text": "a purple dog"}}}
    validation = loom.validate(wf, outputs=["2", "3", "5"])
    assert validation.ok, validation.error
    result = loom.run(validation)
    assert result.ok, result.error
    assert "cat (ca+t)" in result.outputs["2"]["warnings"][0]
    assert "3" not in result.outputs  # a prompt the model knows: nothing to say
    assert "dog (" in result.outputs["5"]["warnings"][0]


def test_comfyui_syntax_is_read_before_the_check(loom):
    """CLIPTextEncode reads weights and embedding names first and encodes long prompts in chunks: the
    unknown word inside a weight group is named, the weight marks are not, and nothing is cut off."""
    long = "a red circle, " * 30  # about 120 tokens: two chunks, no truncation
    wf = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "shapes64"}},
          "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red (cat:1.2) [circle]"}},
          "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": long}}}
    validation = loom.validate(wf, outputs=["2", "3"])
    assert validation.ok, validation.error
    result = loom.run(validation)
    assert result.ok, result.error
    (warning,) = result.outputs["2"]["warnings"]
    assert "1 word(s)" in warning and "cat (ca+t)" in warning
    assert "3" not in result.outputs


def test_loom_run_prints_the_warning(tmp_path):
    wf = workflow("shapes", **{"2": {"text": "a cat"}, "6": {"steps": 2}})
    path = tmp_path / "cat.json"
    path.write_text(json.dumps(wf))
    done = subprocess.run([sys.executable, str(ROOT / "server.py"), "run", str(path), "--data-dir",
                           str(tmp_path / "data"), "--threads", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: #2 Tokenize: 1 word(s) not in the model's vocabulary" in done.stderr and "cat (ca+t)" in done.stderr
    assert done.stdout.strip().endswith(".png")  # the image is still made
