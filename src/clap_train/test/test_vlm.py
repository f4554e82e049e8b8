"""The Qwen3-VL backbone: tiny offline build, processor, 4B architecture copy, layer features."""

import json
import pathlib

import numpy as np
import pytest
import torch

from clap_train.models.vlm import (
    IMAGE_PAD, VLMConfig, VLMProcessor, arch_qwen3vl_config, build_tokenizer, build_vlm, prompt_features,
    qwen3vl_4b_config_path,
)

TINY = dict(hidden_size=64, layers=3, heads=4, kv_heads=2, intermediate_size=128, vision_hidden=32,
            vision_heads=2)


@pytest.fixture(scope="module")
def tiny():
    return build_vlm(VLMConfig(image_size=64, **TINY))


def test_tokenizer_is_byte_level_and_offline():
    tok = build_tokenizer()
    text = "pick up the red cube, then place it — ok?"
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    # special tokens are single ids, not split into bytes
    assert len(tok(IMAGE_PAD + "<|im_end|>", add_special_tokens=False).input_ids) == 2


@pytest.mark.parametrize("size,tokens", [(224, 49), (64, 4)])
def test_visual_token_count(size, tokens):
    _, proc = build_vlm(VLMConfig(image_size=size, **TINY))
    pix = proc.images_to_pixels([np.zeros((size, size, 3), np.uint8)] * 2)
    assert proc.tokens_per_image(pix["image_grid_thw"]) == [tokens, tokens]


def test_processor_round_trip(tmp_path, tiny):
    _, proc = tiny
    proc.save_pretrained(tmp_path)
    again = VLMProcessor.from_pretrained(tmp_path)
    assert again.image_size == 64
    text = "<|im_start|>user\nhello<|im_end|>"
    assert again.tokenizer(text).input_ids == proc.tokenizer(text).input_ids
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a, b = proc.images_to_pixels([img]), again.images_to_pixels([img])
    assert torch.equal(a["pixel_values"], b["pixel_values"])


def test_processor_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer_config.json"):
        VLMProcessor.from_pretrained(tmp_path)


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        VLMConfig(image_size=100)
    with pytest.raises(ValueError, match="no such directory"):
        VLMConfig(pretrained=str(tmp_path / "nope"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"text_config": {}}))
    with pytest.raises(ValueError, match="bad.json"):
        arch_qwen3vl_config(bad, build_tokenizer())


def test_4b_architecture_copy_has_4b_parameters():
    path = qwen3vl_4b_config_path()
    shared = pathlib.Path("/work/shared/configs/qwen3vl-4b-instruct.config.json")
    if shared.is_file():  # the repository's copy is the public architecture, unchanged
        assert json.loads(path.read_text()) == json.loads(shared.read_text())
    from transformers import Qwen3VLForConditionalGeneration

    cfg = arch_qwen3vl_config(path, build_tokenizer())
    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 4.3e9 < n < 4.6e9, n
    assert len(model.model.language_model.layers) == 36


def test_truncated_features_equal_full_forward(tiny):
    model, proc = tiny
    model.eval()
    pix = proc.images_to_pixels([np.full((64, 64, 3), 90, np.uint8)])
    text = f"<|im_start|>user\n<|vision_start|>{IMAGE_PAD}<|vision_end|>pick<|im_end|>\n"
    ids = proc.expand_image_tokens(proc.tokenizer(text).input_ids, proc.tokens_per_image(pix["image_grid_thw"]))
    ids = torch.tensor([ids])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                  mm_token_type_ids=(ids == proc.image_token_id).int(), **pix)
    with torch.no_grad():
        full = model(**inputs, output_hidden_states=True).hidden_states
        short = prompt_features(model, inputs, [0, 1], truncate=True)
    # hidden_states[i + 1] is the output of decoder layer i (before the last norm)
    assert torch.allclose(short[1], full[2], atol=1e-5)
    assert len(model.model.language_model.layers) == 3  # restored after truncation
    with pytest.raises(ValueError, match="feature layer 7"):
        prompt_features(model, inputs, [7])


def test_lora_adapters_train_alone_and_merge_without_changing_outputs():
    from clap_train.models.lora import add_lora, merge_lora

    model, proc = build_vlm(VLMConfig(image_size=64, **TINY))
    model.eval()
    ids = torch.tensor([proc.tokenizer("move the arm left").input_ids])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    n = add_lora(model, rank=4, alpha=8)
    assert 0 < n < sum(p.numel() for p in model.parameters()) / 4
    assert all(("lora_" in name) == p.requires_grad for name, p in model.named_parameters())
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)  # B = 0 at the start
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        adapted = model(input_ids=ids).logits
        assert not torch.allclose(adapted, before, atol=1e-3)
        assert merge_lora(model) == 3 * 7  # 3 layers x 7 projections
        assert not any("lora" in name for name, _ in model.named_parameters())
        assert torch.allclose(model(input_ids=ids).logits, adapted, atol=1e-4)


# -- speed paths that must compute what the library computes (bench/train_speed.py measures them) --
@pytest.mark.parametrize("size", [64, 224])
def test_square_frames_take_the_fast_pixel_path_with_the_processors_values(size):
    _, proc = build_vlm(VLMConfig(image_size=size, **TINY))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(3)]
    fast = proc.images_to_pixels(frames)
    ref = proc.image_processor(images=frames, return_tensors="pt")
    assert fast["pixel_values"].shape == ref["pixel_values"].shape
    assert torch.allclose(fast["pixel_values"], ref["pixel_values"], atol=1e-6)
    assert torch.equal(fast["image_grid_thw"], ref["image_grid_thw"])
    # a frame of another size goes through the processor (which resizes it)
    other = proc.images_to_pixels([rng.integers(0, 256, (size + 32, size, 3), dtype=np.uint8)])
    assert other["pixel_values"].shape[1] == fast["pixel_values"].shape[1]


def test_patch_embedding_as_a_matmul_equals_the_convolution(tiny):
    model, _ = tiny
    proj = model.model.visual.patch_embed.proj
    assert type(proj).__name__ == "PatchConv3d"
    x = torch.randn(40, 3, 2, 16, 16, requires_grad=True)
    out = proj(x)
    ref = torch.nn.functional.conv3d(x, proj.weight, proj.bias, stride=proj.stride)
    assert torch.allclose(out, ref, atol=1e-5)
    g_fast = torch.autograd.grad(out.square().sum(), [x, proj.weight])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, proj.weight])
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert set(dict(model.named_parameters())) >= {"model.visual.patch_embed.proj.weight"}  # same checkpoint keys


def test_right_padded_rows_need_no_padding_mask(tiny):
    """encode_batch right-pads; under causal attention the real tokens' logits do not depend on the mask."""
    from clap_train.models.ntp import add_action_tokens, encode_batch

    model, proc = build_vlm(VLMConfig(image_size=64, **TINY))
    vocab = add_action_tokens(model, proc.tokenizer, 8)
    model.eval()
    rng = np.random.default_rng(1)
    images = [[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)] for n in (3, 1, 2)]
    enc = encode_batch(proc, vocab, images, ["pick up the red cube", "go", "insert the peg, slowly"],
                       ["lift it", "", "grasp the peg with the left arm"], torch.randint(0, 8, (3, 4)), [True] * 3)
    real = enc.inputs["attention_mask"].bool()
    assert not bool(real.all())  # the rows are padded
    with torch.no_grad():
        masked = model(**enc.inputs).logits
        causal = model(**enc.causal_inputs()).logits
    assert torch.allclose(masked[real], causal[real], atol=1e-6)


def test_cached_mrope_positions_are_qwens():
    """The cached M-RoPE positions are get_rope_index's, row by row, also for rows seen before."""
    from clap_train.models.ntp import add_action_tokens, encode_batch
    from clap_train.models.vlm import MRopePositions

    model, proc = build_vlm(VLMConfig(image_size=64, **TINY))
    vocab = add_action_tokens(model, proc.tokenizer, 8)
    rng = np.random.default_rng(2)
    cache = MRopePositions()
    for n_images, texts in (((3, 1, 2), ("pick up the red cube", "go", "x")), ((1, 3), ("go", "pick up the red cube"))):
        images = [[rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)] for n in n_images]
        enc = encode_batch(proc, vocab, images, list(texts), ["lift"] * len(texts),
                           torch.randint(0, 8, (len(texts), 4)), [True] * len(texts))
        ref, _ = model.model.get_rope_index(enc.inputs["input_ids"], image_grid_thw=enc.inputs["image_grid_thw"],
                                            mm_token_type_ids=enc.inputs["mm_token_type_ids"])
        assert torch.equal(cache(model, enc.inputs), ref)  # pads included (numbered as without a mask)
    assert len(cache._rows) == 3  # the second batch's rows were all seen in the first
