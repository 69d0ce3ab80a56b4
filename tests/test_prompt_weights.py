"""ComfyUI's prompt syntax in CLIPTextEncode (nodes.comfy.prompt_weights): the parser against the examples
ComfyUI documents for its own parser, and the embeddings against values worked out by hand from
ComfyUI's rules on the tiny models' text encoders (weights move a token's embedding relative to the
empty prompt's; long prompts are 77-token chunks side by side; an embedding file's vectors are the
input embeddings at their places)."""
import pytest
import torch

from nodes.comfy.prompt_weights import encode_comfy_prompt, parse_weights, tokenize_chunks

from ._sd_families import sd, sdxl

# The rows of one batched encoder call and of separate calls differ in the last bits (other kernels'
# summation order); nothing else separates the expected values from Loom's.
BATCH_TOL = 1e-5


# --- the parser: ComfyUI's documented examples (comfy/sd1_clip.py token_weights) ------------------

@pytest.mark.parametrize("text, expected", [
    ("(foo)", [("foo", 1.1)]),
    ("(foo)(bar)", [("foo", 1.1), ("bar", 1.1)]),
    ("(foo:2.0)", [("foo", 2.0)]),
    ("((foo))", [("foo", 1.1 * 1.1)]),
    ("((foo):1.1)", [("foo", 1.1 * 1.1)]),
    ("((foo:1.1))", [("foo", 1.1)]),
    ("(foo:0.0)", [("foo", 0.0)]),
    ("((foo:1.0):0.0)", [("foo", 1.0)]),
    ("foo ((((lol (cat:666) attack:100)))) baz",
     [("foo ", 1.0), ("lol ", 100.0), ("cat", 666.0), (" attack", 100.0), (" baz", 1.0)]),
    ("foo ((((lol (cat:666) attack):100))) baz",
     [("foo ", 1.0), ("lol ", 100.0 * 1.1), ("cat", 666.0), (" attack", 100.0 * 1.1), (" baz", 1.0)]),
])
def test_weights_as_comfyui_documents_them(text, expected):
    got = parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], rel=1e-12)


@pytest.mark.parametrize("text, expected", [
    ("[foo]", [("[foo]", 1.0)]),  # square brackets are text in ComfyUI (not A1111's 1/1.1)
    ("\\(foo\\) (bar)", [("(foo) ", 1.0), ("bar", 1.1)]),  # escaped parentheses are literal
    ("(a:b)", [("a:b", 1.1)]),  # no number after the colon: it stays text, the group is 1.1
    ("(:2)", [(":2", 1.1)]),  # a colon first is no weight
    ("(foo", [("(foo", 1.0)]),  # unmatched "(" is text
    ("a) (b)", [("a) (b)", 1.0)]),  # a stray ")" makes the rest count from -1: all text
    ("()", []),
])
def test_brackets_escapes_and_stray_parentheses(text, expected):
    assert parse_weights(text) == expected


# --- tokens in chunks ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return sd()


def plain(clip, text):
    """The pipelines' encoding of a prompt of at most 75 tokens (diffusers' tokenization, last layer)."""
    ids = clip.tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return clip.text_encoder(ids)[0]


def test_chunks_keep_short_pieces_whole_and_split_long_ones(tiny):
    tok = tiny["clip"].tokenizer
    red, a, sitting = tok("red a sitting", add_special_tokens=False).input_ids  # one token each
    start, end, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    # 73 tokens, then a piece of 3 (a weight group): it does not fit beside them, so it starts chunk 2
    chunks = tokenize_chunks(tok, "red " * 73 + "(a sitting red:1.5)")
    assert chunks.rows == [[start] + [red] * 73 + [end] + [pad] * 2, [start, a, sitting, red, end] + [pad] * 72]
    assert chunks.weights[1][:5] == [1.0, 1.5, 1.5, 1.5, 1.0] and set(chunks.weights[0]) == {1.0}
    # a piece of 100 tokens (one piece: no weights) fills chunk 1 and goes on in chunk 2
    chunks = tokenize_chunks(tok, "red " * 100)
    assert chunks.rows == [[start] + [red] * 75 + [end], [start] + [red] * 25 + [end] + [pad] * 50]


# --- embeddings worked out from ComfyUI's rules ---------------------------------------------------

def test_a_plain_prompt_is_the_pipelines_encoding(tiny, tmp_path):
    clip = tiny["clip"]
    text = "a red cat, [dog] \\(sitting\\)"
    (got,) = [encode_comfy_prompt(tmp_path, clip, 0, text).embeds]
    assert torch.equal(got, plain(clip, "a red cat, [dog] (sitting)"))  # same calls, same order: exact


def test_a_weight_moves_its_tokens_away_from_the_empty_prompt(tiny, tmp_path):
    """ComfyUI: z_j <- e_j + w * (z_j - e_j) where e is the empty prompt's encoding, for the tokens of
    weight w; the other tokens keep z (the text encoder sees the unweighted prompt)."""
    clip = tiny["clip"]
    got = encode_comfy_prompt(tmp_path, clip, 0, "a (red:1.3) ((sitting)) dog").embeds
    z, e = plain(clip, "a red sitting dog"), plain(clip, "")
    expected = z.clone()
    expected[0, 2] = e[0, 2] + 1.3 * (z[0, 2] - e[0, 2])  # start, a, red, sitting, dog (2 tokens)
    expected[0, 3] = e[0, 3] + 1.1 * 1.1 * (z[0, 3] - e[0, 3])
    assert got.shape == (1, 77, 32)
    torch.testing.assert_close(got, expected, atol=BATCH_TOL, rtol=0)
    assert (got[0, 2] - z[0, 2]).abs().max() > 100 * BATCH_TOL  # the weight really acted


def test_a_long_prompt_is_chunks_side_by_side(tiny, tmp_path):
    clip = tiny["clip"]
    got = encode_comfy_prompt(tmp_path, clip, 0, "red " * 100).embeds
    expected = torch.cat([plain(clip, "red " * 75), plain(clip, "red " * 25)], dim=1)
    assert got.shape == (1, 154, 32)
    torch.testing.assert_close(got, expected, atol=BATCH_TOL, rtol=0)


def test_clip_skip_applies_to_every_chunk(tiny, tmp_path):
    """CLIPSetLastLayer -2 on SD 1.x: the layer before the last, then the final layer norm, per chunk."""
    clip = tiny["clip"]
    enc = clip.text_encoder
    got = encode_comfy_prompt(tmp_path, clip, 1, "red " * 80).embeds
    rows = [clip.tokenizer(t, padding="max_length", max_length=77, return_tensors="pt").input_ids
            for t in ("red " * 75, "red " * 5)]
    with torch.no_grad():
        expected = torch.cat([enc.final_layer_norm(enc(r, output_hidden_states=True).hidden_states[-2])
                              for r in rows], dim=1)
    torch.testing.assert_close(got, expected, atol=BATCH_TOL, rtol=0)


def test_embedding_vectors_are_the_input_embeddings_at_their_places(tiny, tmp_path):
    """An embedding file holding the token embeddings of "red dog" makes "a embedding:x cat" encode as
    "a red dog cat"; ComfyUI's file formats: a safetensors tensor, A1111's string_to_param in a .pt,
    SDXL's per-encoder keys."""
    from safetensors.torch import save_file

    clip = tiny["clip"]
    table = clip.text_encoder.get_input_embeddings().weight.detach()
    red_dog = table[clip.tokenizer("red dog", add_special_tokens=False).input_ids].clone()
    folder = tmp_path / "embeddings"
    (folder / "sub").mkdir(parents=True)
    save_file({"emb_params": red_dog}, str(folder / "reddog.safetensors"))
    torch.save({"string_to_param": {"*": red_dog}, "name": "x"}, folder / "sub" / "a1111.pt")
    save_file({"clip_g": torch.zeros(2, 64), "clip_l": red_dog}, str(folder / "xl.safetensors"))
    expected = plain(clip, "a red dog cat")
    for name in ("reddog", "reddog.safetensors", "a1111", "xl"):
        got = encode_comfy_prompt(tmp_path, clip, 0, f"a embedding:{name} cat").embeds
        assert torch.equal(got, expected), name
    got = encode_comfy_prompt(tmp_path, clip, 0, "a embedding:reddog, cat").embeds  # the comma after it stays
    assert torch.equal(got, plain(clip, "a red dog , cat"))
    # weighted embedding vectors: the weight moves them as any token
    got = encode_comfy_prompt(tmp_path, clip, 0, "a (embedding:reddog:0.5) cat").embeds
    e = plain(clip, "")
    exp = expected.clone()
    n = len(red_dog) + 2  # start, a, the vectors
    exp[0, 2:n] = e[0, 2:n] + 0.5 * (expected[0, 2:n] - e[0, 2:n])
    torch.testing.assert_close(got, exp, atol=BATCH_TOL, rtol=0)


def test_missing_embeddings_are_left_out_and_names_stay_in_the_folder(tiny, tmp_path):
    clip = tiny["clip"]
    secret = tmp_path / "secret.safetensors"
    from safetensors.torch import save_file

    save_file({"v": torch.ones(1, 32)}, str(secret))  # beside embeddings/, not in it
    (tmp_path / "embeddings").mkdir()
    expected = plain(clip, "a cat")
    for text in ("a embedding:nothing cat", "a embedding:../secret cat"):
        assert torch.equal(encode_comfy_prompt(tmp_path, clip, 0, text).embeds, expected), text


# --- SDXL: two encoders, pooled output of the first chunk -----------------------------------------

def test_sdxl_chunks_weights_and_pooled_output(tmp_path):
    torch.manual_seed(0)
    clip = sdxl()["clip"]
    text = "a (red:1.2) sitting " + "red " * 80

    def hidden(tok, enc, rows):
        out = [enc(r, output_hidden_states=True) for r in rows]
        return torch.cat([o.hidden_states[-2] for o in out], dim=1), out[0][0]

    def rows(tok, texts):
        return [tok(t, padding="max_length", max_length=77, return_tensors="pt").input_ids for t in texts]

    got = encode_comfy_prompt(tmp_path, clip, 0, text)
    texts = ["a red sitting " + "red " * 72, "red " * 8]
    with torch.no_grad():
        zl, _ = hidden(clip.tokenizer, clip.text_encoder, rows(clip.tokenizer, texts))
        zg, pooled = hidden(clip.tokenizer_2, clip.text_encoder_2, rows(clip.tokenizer_2, texts))
        el, _ = hidden(clip.tokenizer, clip.text_encoder, rows(clip.tokenizer, [""]))
        eg, _ = hidden(clip.tokenizer_2, clip.text_encoder_2, rows(clip.tokenizer_2, [""]))
    for z, e in ((zl, el), (zg, eg)):
        z[0, 2] = e[0, 2] + 1.2 * (z[0, 2] - e[0, 2])
    expected = torch.cat([zl, zg], dim=-1)
    assert got.embeds.shape == (1, 154, expected.shape[-1])
    torch.testing.assert_close(got.embeds, expected, atol=BATCH_TOL, rtol=0)
    torch.testing.assert_close(got.pooled, pooled, atol=BATCH_TOL, rtol=0)  # the first chunk's, unweighted
    # CLIPTextEncodeSDXL with a short text_l: its side gets an empty prompt's chunk
    got = encode_comfy_prompt(tmp_path, clip, 0, "a cat", "red " * 80)
    with torch.no_grad():
        zl, _ = hidden(clip.tokenizer, clip.text_encoder, rows(clip.tokenizer, ["a cat", ""]))
    torch.testing.assert_close(got.embeds[..., :zl.shape[-1]], zl, atol=BATCH_TOL, rtol=0)


def test_embedding_names_end_at_white_space_or_brackets(tiny, tmp_path):
    """`embedding:name` followed by a newline, a "<" or a "[": the name ends there, the rest is text."""
    from safetensors.torch import save_file

    clip = tiny["clip"]
    table = clip.text_encoder.get_input_embeddings().weight.detach()
    red = table[clip.tokenizer("red", add_special_tokens=False).input_ids].clone()
    (tmp_path / "embeddings").mkdir()
    save_file({"v": red}, str(tmp_path / "embeddings" / "r.safetensors"))
    for text, same_as in (("a embedding:r\nsitting", "a red sitting"), ("a embedding:r[sitting]", "a red [sitting]")):
        assert torch.equal(encode_comfy_prompt(tmp_path, clip, 0, text).embeds, plain(clip, same_as)), text


def test_sdxl_one_text_cut_to_the_shorter_encoder(tmp_path):
    """CLIPTextEncode on SDXL with an embedding of 1 vector for CLIP-L and 80 for bigG: bigG takes two
    chunks, CLIP-L one; ComfyUI keeps the length of the shorter (77)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    clip = sdxl()["clip"]
    dl = clip.text_encoder.get_input_embeddings().embedding_dim
    dg = clip.text_encoder_2.get_input_embeddings().embedding_dim
    (tmp_path / "embeddings").mkdir()
    save_file({"clip_l": torch.randn(1, dl), "clip_g": torch.randn(80, dg)}, str(tmp_path / "embeddings" / "e.safetensors"))
    got = encode_comfy_prompt(tmp_path, clip, 0, "a embedding:e")
    assert got.embeds.shape == (1, 77, dl + dg)
    alone = encode_comfy_prompt(tmp_path, clip, 0, "a embedding:e", "a embedding:e")  # SDXL node: padded
    assert alone.embeds.shape == (1, 154, dl + dg)
    torch.testing.assert_close(got.embeds, alone.embeds[:, :77], atol=BATCH_TOL, rtol=0)  # batch of 1 vs 2 rows
