"""T5-XXL text-encoder files as ComfyUI users hold them (nodes.loading.encoders.t5): a tiny random
T5EncoderModel written in ComfyUI's layout (no `encoder.embed_tokens`), plain and scaled fp8, with the
tiny tokenizer beside it; loaded by the text-encoder loader, sized from the shapes."""
import pytest
import torch
from safetensors.torch import save_file

from nodes.loading.checkpoints import load_text_encoder
from nodes.loading.encoders import encoder_file
from nodes.loading.encoders import t5
from nodes.loading.single_file import CheckpointError

TINY = dict(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)


def tiny_model(seed=0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(vocab_size=len(t5.tiny_tokenizer()), **TINY)).eval()
    with torch.no_grad():  # random norms: a unit norm would hide a norm left at its default
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def comfy_state(model):
    return {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}


def write(tmp_path, state, name="t5xxl_fp16.safetensors"):
    folder = tmp_path / "text_encoders"
    folder.mkdir(exist_ok=True)
    save_file(state, folder / name)
    t5.write_tiny_tokenizer(folder)
    return folder / name


def test_the_tiny_tokenizer_ends_with_eos_and_pads_as_comfyui(tmp_path):
    tok = t5.tiny_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = t5.token_ids(tok, "a red cat", 12)
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:6] == ["\u2581a", "\u2581r", "e", "d", "\u2581c", "a"] and ids[7:] == [1, 0, 0, 0, 0]
    assert len(t5.token_ids(tok, "x " * 20, 12)) == 21  # longer than the minimum: kept whole, no truncation
    t5.write_tiny_tokenizer(tmp_path)
    assert t5.tokenizer_beside(tmp_path / "t5xxl_fp16.safetensors")("a red cat").input_ids == ids[:8]


def test_a_comfyui_t5_file_loads_with_the_same_outputs(tmp_path):
    """Config read off the shapes; the pipeline's way of encoding (diffusers' FluxPipeline: pad to a fixed
    length, no mask) gives exactly the loaded encoder's output through ComfyUI's tokens."""
    model = tiny_model()
    path = write(tmp_path, comfy_state(model))
    kind, tokenizer, loaded = load_text_encoder(path, torch.device("cpu"), torch.float32)
    assert kind == "t5xxl" and type(loaded).__name__ == "T5EncoderModel"
    config = loaded.config
    assert (config.d_model, config.d_kv, config.d_ff, config.num_layers, config.num_heads) == (16, 8, 32, 2, 2)
    assert config.relative_attention_num_buckets == 8 and config.is_gated_act
    assert loaded.encoder.embed_tokens.weight is loaded.shared.weight
    ours = t5.encode(tokenizer, loaded, ["a red cat", "a dog"], min_length=16)
    ids = tokenizer(["a red cat", "a dog"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        theirs = model(input_ids=ids).last_hidden_state
    assert ours.shape == (2, 16, 16) and torch.equal(ours, theirs)


def test_scaled_fp8_files_are_multiplied_back(tmp_path):
    model = tiny_model(1)
    state = comfy_state(model)
    scaled, expected = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in state.items():
        if k.endswith(("q.weight", "wo.weight", "wi_0.weight")):
            scale = v.abs().max() / 448
            scaled[k] = (v / scale).to(torch.float8_e4m3fn)
            scaled[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            expected[k] = scaled[k].to(torch.float32) * scale
        else:
            scaled[k] = expected[k] = v
    path = write(tmp_path, scaled, "t5xxl_fp8_e4m3fn_scaled.safetensors")
    _, _, loaded = load_text_encoder(path, torch.device("cpu"), torch.float32)
    got = loaded.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not torch.equal(got["encoder.block.0.layer.0.SelfAttention.q.weight"], state[
        "encoder.block.0.layer.0.SelfAttention.q.weight"])  # fp8 really lost precision: the check has teeth


def test_plain_fp8_files_are_cast_when_placed(tmp_path):
    state = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 and "relative" not in k else v
             for k, v in comfy_state(tiny_model(2)).items()}
    _, _, loaded = load_text_encoder(write(tmp_path, state, "t5xxl_fp8_e4m3fn.safetensors"), torch.device("cpu"),
                                     torch.float32)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    q = "encoder.block.1.layer.0.SelfAttention.q.weight"
    assert torch.equal(loaded.state_dict()[q], state[q].to(torch.float32))


def test_what_is_not_t5(tmp_path):
    state = comfy_state(tiny_model())
    assert encoder_file(state).kind == "t5xxl"
    umt5 = dict(state, **{t5.UMT5_MARK: state[t5.BIAS]})
    assert encoder_file(umt5) is None
    assert encoder_file({"text_model.embeddings.token_embedding.weight": torch.zeros(4, 4)}) is None
    prefixed = {"text_encoders.t5xxl.transformer." + k: v for k, v in state.items()}
    assert t5.is_t5(prefixed, "text_encoders.t5xxl.transformer.")
    assert t5.t5_from_state(prefixed, "text_encoders.t5xxl.transformer.").config.num_layers == 2
    bare = tmp_path / "alone" / "t5xxl_fp16.safetensors"
    bare.parent.mkdir()
    save_file(state, bare)
    with pytest.raises(CheckpointError, match="t5_tokenizer"):
        load_text_encoder(bare, torch.device("cpu"), torch.float32)


def test_prompt_weights_move_tokens_from_the_empty_prompt_as_comfyui():
    """`(red:1.5) cat`: the tokens of `red cat`; red's three tokens become e + 1.5 (z - e), e the empty
    prompt's encoding run in the same batch; the others stay z. Parentheses are not tokens."""
    model = tiny_model(3)
    tok = t5.tiny_tokenizer()
    ids, weights = t5.weighted_tokens(tok, "(red:1.5) cat", 12)
    assert ids == t5.token_ids(tok, "red cat", 12) and weights[:7] == [1.5] * 3 + [1.0] * 4
    assert tok.convert_tokens_to_ids("(") in t5.token_ids(tok, "\\(red\\) cat", 0)  # escaped: literal
    got = t5.encode(tok, model, "(red:1.5) cat", 12)
    with torch.no_grad():
        z, e = model(input_ids=torch.tensor([ids, [1] + [0] * 11])).last_hidden_state
    assert torch.equal(got[0, 3:], z[3:]) and torch.equal(got[0, :3], (z[:3] - e[:3]) * 1.5 + e[:3])
    assert not torch.equal(got[0, :3], z[:3])
