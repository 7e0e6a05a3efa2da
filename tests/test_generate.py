"""Sampling (align/generate.py): K samples from a shared prompt cache, their log-probabilities, bad input,
and the reference log-likelihood of answers given as text."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS

from align.chat import answer_ids
from align.errors import AlignError
from align.generate import reference_logprobs, sample_k, sequence_logprobs


def test_k_samples_from_a_shared_prompt_cache_match_each_sampled_alone(policy, tokenizer):
    """Log-probabilities recorded while sampling K answers from one shared, left-padded prompt
    cache equal those of each (prompt, answer) scored alone, unpadded, to 1e-5."""
    out = sample_k(policy, tokenizer, PROMPTS, k=3, temperature=1.0, top_p=1.0, max_new_tokens=10,
                   batch_size=8, seed=0)
    assert [len(group) for group in out] == [3, 3, 3]
    for i, group in enumerate(out):
        assert all(s.prompt_index == i for s in group)
        for s in group:
            (alone,) = sequence_logprobs(policy, tokenizer, [PROMPTS[i]], [s.token_ids], batch_size=1)
            assert len(alone) == len(s.logprobs) == len(s.token_ids)
            torch.testing.assert_close(torch.tensor(s.logprobs), torch.tensor(alone), atol=1e-5, rtol=0)
    # the K samples of a prompt are different draws, not one draw repeated
    assert len({tuple(s.token_ids) for s in out[2]}) > 1


def test_shared_cache_first_token_distribution_equals_a_plain_forward(policy, tokenizer):
    """Greedy (temperature 0) answers from the shared cache equal one-prompt-at-a-time greedy answers."""
    shared = sample_k(policy, tokenizer, PROMPTS, k=2, temperature=0.0, top_p=1.0, max_new_tokens=8,
                      batch_size=8, seed=0)
    for i, p in enumerate(PROMPTS):
        alone = sample_k(policy, tokenizer, [p], k=1, temperature=0.0, top_p=1.0, max_new_tokens=8,
                         batch_size=1, seed=0)[0][0]
        assert shared[i][0].token_ids == shared[i][1].token_ids == alone.token_ids


def test_sampling_bad_input(policy, tokenizer):
    kw = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4, "batch_size": 4, "seed": 0}
    with pytest.raises(AlignError, match="k must be at least 1"):
        sample_k(policy, tokenizer, PROMPTS, k=0, **kw)
    with pytest.raises(AlignError, match="prompt set is empty"):
        sample_k(policy, tokenizer, [], k=2, **kw)
    with pytest.raises(AlignError, match=r"prompt 2 is \d+ tokens, longer than max_prompt_tokens=12"):
        sample_k(policy, tokenizer, PROMPTS, k=2, max_prompt_tokens=12, **kw)
    with pytest.warns(UserWarning, match="keeping their last 12 tokens"):
        out = sample_k(policy, tokenizer, PROMPTS, k=2, max_prompt_tokens=12, long_prompts="truncate", **kw)
    assert len(out) == 3


def test_reference_logprobs_of_repeated_answers_equal_each_scored_alone(policy, tokenizer):
    prompts, answers = [PROMPTS[0], PROMPTS[0], PROMPTS[1]], ["The answer is 7."] * 3
    got = reference_logprobs(policy, tokenizer, prompts, answers, batch_size=64)
    alone = [math.fsum(sequence_logprobs(policy, tokenizer, [p], [answer_ids(tokenizer, a)], batch_size=1)[0])
             for p, a in zip(prompts, answers)]
    assert got == pytest.approx(alone, abs=1e-5) and got[0] == got[1] and got[0] != pytest.approx(got[2])


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_next_token_samples_from_generates_warped_distribution(temperature, top_p):
    """The decoding loop draws from what ``generate``'s temperature and top-p warpers leave: the same
    nucleus (the same tokens masked) and the same probabilities inside it."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    from align.generate import next_token

    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
    expected = warped.softmax(-1)
    counts = torch.zeros_like(logits)
    for _ in range(4000):
        counts[torch.arange(6), next_token(logits, temperature=temperature, top_p=top_p)] += 1
    assert torch.all((counts > 0) <= (expected > 0))  # never a token outside the nucleus
    torch.testing.assert_close(counts / 4000, expected, atol=0.03, rtol=0)


def test_rows_that_finish_leave_the_batch_and_the_rest_keep_exact_logprobs(policy, tokenizer):
    """With EOS made likely, some samples stop early (they leave the batch and its cache) while others
    run on: every sample's recorded log-probabilities still equal its teacher-forced ones, and a sample
    holds its EOS last and nowhere else."""
    import copy

    model = copy.deepcopy(policy)
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 20.0
    out = sample_k(model, tokenizer, PROMPTS, k=4, temperature=1.0, top_p=1.0, max_new_tokens=12, batch_size=8,
                   seed=1)
    samples = [s for group in out for s in group]
    lengths = {len(s.token_ids) for s in samples}
    assert any(s.finished for s in samples) and any(not s.finished for s in samples) and len(lengths) > 2
    for s in samples:
        assert (tokenizer.eos_token_id in s.token_ids) == s.finished
        assert not s.finished or s.token_ids.index(tokenizer.eos_token_id) == len(s.token_ids) - 1
        (alone,) = sequence_logprobs(model, tokenizer, [PROMPTS[s.prompt_index]], [s.token_ids], batch_size=1)
        torch.testing.assert_close(torch.tensor(s.logprobs), torch.tensor(alone), atol=1e-5, rtol=0)


def test_the_growing_cache_changes_no_draw(policy, tokenizer, monkeypatch):
    """Keys and values written into a buffer with room to grow (instead of concatenated every step) give
    the very same samples and log-probabilities as transformers' DynamicCache, rows leaving included."""
    import copy

    from transformers import DynamicCache

    import align.generate as g

    model = copy.deepcopy(policy)
    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer.eos_token_id] *= 20.0
    kw = {"k": 4, "temperature": 1.0, "top_p": 0.9, "max_new_tokens": 60, "batch_size": 2, "seed": 3}
    growing = sample_k(model, tokenizer, PROMPTS, **kw)
    monkeypatch.setattr(g, "growing_cache", lambda m: DynamicCache(config=m.config))
    dynamic = sample_k(model, tokenizer, PROMPTS, **kw)
    assert [[s.token_ids for s in group] for group in growing] == [[s.token_ids for s in group] for group in dynamic]
    assert [[s.logprobs for s in group] for group in growing] == [[s.logprobs for s in group] for group in dynamic]
    assert any(len(s.token_ids) > 50 for group in growing for s in group)  # the buffer grew past its 64 slots


def test_sampling_logprobs_are_the_tempered_distributions_the_draws_came_from(policy, tokenizer):
    """PPO's old log-probabilities come from the sampler: log softmax(logits / temperature) at each drawn
    token, equal to a teacher-forced forward's; none where the distribution was truncated (top-p) or
    there was none (greedy)."""
    from align.chat import prompt_ids
    from align.rl.rollout import Rollout, token_logprobs

    out = sample_k(policy, tokenizer, PROMPTS, k=3, temperature=0.7, top_p=1.0, max_new_tokens=10, batch_size=2,
                   seed=4)
    samples = [s for group in out for s in group]
    rollout = Rollout.build([prompt_ids(tokenizer, PROMPTS[s.prompt_index]) for s in samples],
                            [s.token_ids for s in samples], tokenizer.pad_token_id)
    with torch.no_grad():
        forced, _ = token_logprobs(policy, rollout, 0.7)
    for i, s in enumerate(samples):
        assert len(s.sampling_logprobs) == len(s.token_ids)
        torch.testing.assert_close(torch.tensor(s.sampling_logprobs), forced[i, :len(s.token_ids)], atol=1e-5, rtol=0)
        assert s.sampling_logprobs != pytest.approx(s.logprobs)  # tempered, not the model's own
    for temperature, top_p in ((0.0, 1.0), (1.0, 0.9)):
        (group,) = sample_k(policy, tokenizer, PROMPTS[:1], k=1, temperature=temperature, top_p=top_p,
                            max_new_tokens=4, batch_size=1, seed=0)
        assert group[0].sampling_logprobs is None


def test_response_logprobs_skip_prompt_logits_and_change_nothing(policy, tokenizer, monkeypatch):
    """``logits_to_keep`` drops the outputs that predict prompt tokens only: the same log-probabilities
    and entropies as from every position's logits."""
    import align.rl.rollout as rollout_module
    from align.chat import prompt_ids
    from align.rl.rollout import Rollout, token_logprobs

    prompts = [prompt_ids(tokenizer, p) for p in PROMPTS]
    responses = [[5, 6, 7, tokenizer.eos_token_id], [8, tokenizer.eos_token_id], [9, 10, 11, 12, 13, 14]]
    rollout = Rollout.build(prompts[:3], responses, tokenizer.pad_token_id)
    assert min(len(p) for p in prompts[:3]) > 2  # so there are prompt outputs to skip
    with torch.no_grad():
        kept = token_logprobs(policy, rollout, 0.8, with_entropy=True)
        monkeypatch.setattr(rollout_module, "_supports_logits_to_keep", lambda model: False)
        every = token_logprobs(policy, rollout, 0.8, with_entropy=True)
    torch.testing.assert_close(kept[0], every[0])
    torch.testing.assert_close(kept[1] * rollout.mask, every[1] * rollout.mask)


def test_prompt_ids_are_remembered_per_tokenizer_and_chat_template(tokenizer):
    """A prompt is rendered once per tokenizer and template: a changed template renders anew."""
    import copy

    from align.chat import prompt_ids

    first = prompt_ids(tokenizer, PROMPTS[0])
    assert prompt_ids(tokenizer, PROMPTS[0]) == first
    other = copy.deepcopy(tokenizer)
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert prompt_ids(other, PROMPTS[0]) == other(PROMPTS[0], add_special_tokens=False)["input_ids"] != first
    assert prompt_ids(tokenizer, PROMPTS[0]) == first
