"""CLAP-NTP: action tokens, chat prompt + targets, loss on targets only, constrained decoding, overfitting."""

import numpy as np
import pytest
import torch

from clap_train.models.ntp import (
    ACT_END, ACT_START, ActionGrammar, action_token, add_action_tokens, encode_batch, generate_plan, target_loss,
)
from clap_train.models.vlm import VLMConfig, build_vlm

K, NQ = 32, 16


def tiny(seed=0):
    model, proc = build_vlm(VLMConfig(image_size=64, hidden_size=64, layers=2, heads=4, kv_heads=2,
                                      intermediate_size=128, vision_hidden=32, vision_heads=2, seed=seed))
    vocab = add_action_tokens(model, proc.tokenizer, K)
    return model, proc, vocab


def frames(n, value):
    return [np.full((64, 64, 3), value + 20 * i, np.uint8) for i in range(n)]


def test_action_tokens_are_added_once_and_embeddings_grow():
    model, proc, vocab = tiny()
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == len(proc.tokenizer) and len(vocab.ids) == K
    assert len(set(vocab.ids.tolist()) | {vocab.start_id, vocab.end_id}) == K + 2
    assert proc.tokenizer.convert_tokens_to_ids(action_token(5)) == vocab.ids[5]
    again = add_action_tokens(model, proc.tokenizer, K)  # idempotent (e.g. when starting from a policy)
    assert torch.equal(again.ids, vocab.ids) and model.get_input_embeddings().weight.shape[0] == rows
    assert torch.equal(vocab.to_codes(vocab.ids[[3, 0, 31]]), torch.tensor([3, 0, 31]))
    with pytest.raises(ValueError, match="non-action token"):
        vocab.to_codes(torch.tensor([vocab.start_id]))


def test_prompt_and_target_layout():
    _, proc, vocab = tiny()
    codes = torch.arange(2 * NQ).reshape(2, NQ) % K
    enc = encode_batch(proc, vocab, [frames(3, 10), frames(1, 50)], ["put the cube", "open"], ["reach", ""],
                       codes)
    ids = enc.inputs["input_ids"]
    tok = proc.tokenizer
    # sample 0: 3 images x 4 visual tokens; sample 1: 1 image
    assert int((ids[0] == proc.image_token_id).sum()) == 12 and int((ids[1] == proc.image_token_id).sum()) == 4
    assert enc.inputs["pixel_values"].shape[0] == 4 * 16  # 4 images x 16 patches each
    text0 = tok.decode(ids[0][enc.inputs["attention_mask"][0].bool()])
    assert text0.startswith("<|im_start|>user\n<|vision_start|>")
    assert "put the cube<|im_end|>\n<|im_start|>assistant\n" in text0
    target0 = tok.decode(ids[0][enc.target_mask[0]])
    assert target0.startswith("reach" + ACT_START) and target0.endswith(ACT_END + "<|im_end|>")
    for b in range(2):
        acts = ids[b][enc.action_mask[b]]
        assert torch.equal(vocab.to_codes(acts), codes[b])
    # prompt and targets partition the real tokens; padding is neither
    real = enc.inputs["attention_mask"].bool()
    assert torch.equal(enc.prompt_mask | enc.target_mask, real)
    assert not bool((enc.prompt_mask & enc.target_mask).any())
    # the subtask mask: the subtask's text only (sample 1 has none)
    assert tok.decode(ids[0][enc.subtask_mask[0]]) == "reach"
    assert not bool(enc.subtask_mask[1].any())
    assert not bool((enc.subtask_mask & ~enc.target_mask).any())
    assert not bool((enc.subtask_mask & enc.action_mask).any())
    # a human sample without pseudo tokens trains on its subtask only
    enc2 = encode_batch(proc, vocab, [frames(1, 0)], ["x"], ["wave"], codes[:1], has_codes=[False])
    assert not bool(enc2.action_mask.any())
    assert tok.decode(enc2.inputs["input_ids"][0][enc2.target_mask[0]]) == "wave<|im_end|>"
    assert tok.decode(enc2.inputs["input_ids"][0][enc2.subtask_mask[0]]) == "wave"


def test_loss_counts_targets_only():
    """The LM head runs on the positions that predict a target token; the loss is their cross-entropy."""
    import torch.nn.functional as F

    from clap_train.models.vlm import selected_logits

    model, proc, vocab = tiny()
    codes = torch.randint(0, K, (2, NQ), generator=torch.Generator().manual_seed(0))
    enc = encode_batch(proc, vocab, [frames(1, 10), frames(2, 20)], ["pick the red cube", "go"], ["reach", ""],
                       codes)
    select = enc.predicting(enc.target_mask)
    with torch.no_grad():
        full = model(**enc.inputs).logits
        logits = selected_logits(model, enc.causal_inputs(), select)
        assert logits.shape[0] == int(enc.target_mask.sum())  # one row per target token, none for the prompt
        assert torch.allclose(logits, full[select], atol=1e-5)
        labels = enc.inputs["input_ids"][:, 1:][enc.target_mask[:, 1:]]
        assert torch.allclose(target_loss(logits, enc), F.cross_entropy(full[:, :-1][enc.target_mask[:, 1:]], labels),
                              atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_always_gives_nq_valid_tokens(seed):
    model, proc, vocab = tiny(seed)
    model.eval()
    # adversarial random weights: make im_end / act_end / text the model's favourite tokens
    with torch.no_grad():
        head = model.get_output_embeddings()
        head.weight[vocab.im_end_id] += 5.0 * torch.randn_like(head.weight[vocab.im_end_id])
        head.weight[vocab.ids[:3]] = 0.0
    enc = encode_batch(proc, vocab, [frames(2, 30 * seed)], ["stack the blocks"])
    subtasks, codes = generate_plan(model, proc, vocab, enc, NQ, max_subtask_tokens=6)
    assert codes.shape == (1, NQ) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < K
    assert len(proc.tokenizer(subtasks[0], add_special_tokens=False).input_ids) <= 6


def test_training_cuts_a_long_subtask_where_decoding_does_and_says_so():
    _, proc, vocab = tiny()
    codes = torch.zeros(1, NQ, dtype=torch.long)
    subtask = "move the right gripper above the red cube"
    cut = 10
    with pytest.warns(UserWarning, match="max_subtask_tokens = 10 cuts it"):
        enc = encode_batch(proc, vocab, [frames(1, 10)], ["pick"], [subtask], codes, max_subtask_tokens=cut)
    target = enc.inputs["input_ids"][0][enc.target_mask[0]].tolist()
    # the grammar's state after the taught subtask tokens is <|act_start|>: training and decoding agree
    g = ActionGrammar(proc.tokenizer, vocab, NQ, prompt_len=0, vocab_rows=len(proc.tokenizer), max_subtask_tokens=cut)
    start = target.index(vocab.start_id)
    assert start == cut and target[:cut] == list(proc.text_ids(subtask))[:cut]
    assert g.allowed(target[:start]) == vocab.start_id
    # a subtask within the limit is kept whole, without a warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = encode_batch(proc, vocab, [frames(1, 10)], ["pick"], ["reach"], codes, max_subtask_tokens=cut)
    assert proc.tokenizer.decode(enc.inputs["input_ids"][0][enc.target_mask[0]]).startswith("reach" + ACT_START)


def test_grammar_states():
    model, proc, vocab = tiny()
    g = ActionGrammar(proc.tokenizer, vocab, NQ, prompt_len=0, vocab_rows=len(proc.tokenizer),
                      max_subtask_tokens=3)
    text = g.allowed([])
    assert bool(text[vocab.start_id]) and not bool(text[vocab.ids].any()) and not bool(text[vocab.im_end_id])
    assert g.allowed([70, 71, 72]) == vocab.start_id  # subtask budget used up
    g.min_subtask = 2
    assert not bool(g.allowed([70])[vocab.start_id]) and bool(g.allowed([70, 71])[vocab.start_id])
    acts = g.allowed([70, vocab.start_id] + vocab.ids[:5].tolist())
    assert bool(acts[vocab.ids].all()) and int(acts.sum()) == K
    assert g.allowed([vocab.start_id] + vocab.ids[:NQ].tolist()) == vocab.end_id
    assert g.allowed([vocab.start_id] + vocab.ids[:NQ].tolist() + [vocab.end_id]) == vocab.im_end_id


def test_ntp_overfits_one_small_batch_and_decodes_it():
    from clap_train.models.vlm import selected_logits

    torch.manual_seed(0)
    model, proc, vocab = tiny()
    codes = torch.randint(0, K, (2, NQ), generator=torch.Generator().manual_seed(3))
    imgs = [frames(1, 0), frames(1, 200)]
    enc = encode_batch(proc, vocab, imgs, ["pick it", "pick it"], ["reach", "grasp"], codes)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(80):
        loss = target_loss(selected_logits(model, enc.causal_inputs(), enc.predicting(enc.target_mask)), enc)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    model.eval()
    for b in range(2):
        prompt = encode_batch(proc, vocab, [imgs[b]], ["pick it"])
        subtask, got = generate_plan(model, proc, vocab, prompt, NQ)
        assert subtask[0] == ["reach", "grasp"][b]
        assert (got[0] == codes[b]).float().mean() > 0.9
