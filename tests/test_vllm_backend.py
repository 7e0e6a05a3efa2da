"""``generation.backend: vllm`` (``align.vllm_backend``) against a stand-in for vLLM's offline API
(``tests/fake_vllm``: a Hugging Face model on the CPU behind vLLM's names): the samples come back in prompt
order with raw log-probabilities equal to the policy's, and the engine's weights follow the policy's.
Real vLLM needs a CUDA GPU; without it the backend is refused when the config loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import PROMPTS, SMOKE, align_app

FAKE = str(Path(__file__).parent / "fake_vllm")


def test_choosing_vllm_without_it_is_refused_at_config_load(tmp_path):
    if any(p == FAKE for p in sys.path):
        pytest.skip("the stand-in is on the path")
    code, out, err = align_app("run", str(SMOKE), "--dry-run", "--set", "generation.backend=vllm", "--run-dir",
                               str(tmp_path / "run"))
    assert code == 2
    assert "generation: backend: vllm needs the vllm package" in err and "backend: hf" in err


@pytest.fixture
def fake_vllm(monkeypatch):
    monkeypatch.syspath_prepend(FAKE)
    sys.modules.pop("vllm", None)
    yield __import__("vllm")
    from align import vllm_backend

    vllm_backend.activate(None)
    vllm_backend._ENGINE.clear()
    sys.modules.pop("vllm", None)


def test_vllm_samples_in_prompt_order_with_the_policys_logprobs_and_follows_its_weights(fake_vllm, policy,
                                                                                     tokenizer, tmp_path):
    import copy

    from align import vllm_backend
    from align.generate import sample_k, sequence_logprobs

    model = copy.deepcopy(policy)
    model.save_pretrained(tmp_path / "policy")  # the engine starts from the folder the policy came from
    model.config._name_or_path = str(tmp_path / "policy")
    vllm_backend.activate(vllm_backend.GenerationConfig(backend="vllm"))

    def draw():
        return sample_k(model, tokenizer, PROMPTS, k=3, temperature=1.0, top_p=1.0, max_new_tokens=8, batch_size=2,
                        seed=5)

    def teacher_forced(groups):
        flat = [(PROMPTS[i], s) for i, g in enumerate(groups) for s in g]
        return flat, sequence_logprobs(model, tokenizer, [p for p, _ in flat], [s.token_ids for _, s in flat])

    groups = draw()
    assert [len(g) for g in groups] == [3, 3, 3] and all(s.prompt_index == i for i, g in enumerate(groups) for s in g)
    flat, forced = teacher_forced(groups)
    for (_, s), lp in zip(flat, forced):
        assert s.logprobs == pytest.approx(lp, abs=1e-4)  # vLLM's raw log-probabilities: the model's own
        assert s.sampling_logprobs is None  # PPO recomputes its old log-probabilities by teacher forcing
        assert s.finished == (s.token_ids[-1] == tokenizer.eos_token_id)
    assert fake_vllm.CALLS["engines"] == 1 and fake_vllm.CALLS["load_weights"] == 1
    # the policy changes (an update): the next draw samples from the new weights, with the same engine
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    groups = draw()
    flat, forced = teacher_forced(groups)
    for (_, s), lp in zip(flat, forced):
        assert s.logprobs == pytest.approx(lp, abs=1e-4)
    assert fake_vllm.CALLS["engines"] == 1 and fake_vllm.CALLS["load_weights"] == 2
    assert fake_vllm.CALLS["reset_prefix_cache"] == 2


def test_a_lora_policy_is_synced_as_its_merged_weights(policy):
    import copy

    from peft import LoraConfig, get_peft_model

    from align.vllm_backend import merged_state

    base = copy.deepcopy(policy)
    model = get_peft_model(copy.deepcopy(policy), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    state = merged_state(model)
    assert set(state) == set(base.state_dict())  # the base model's names: what vLLM's load_weights reads
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    for name, value in state.items():
        assert torch.equal(value, merged[name]), name
    changed = [n for n in state if not torch.equal(state[n], base.state_dict()[n])]
    assert changed and all("q_proj" in n for n in changed)
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))  # the adapter is unmerged again
