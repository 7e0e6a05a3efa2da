"""Simulated annotators: demonstration noise mix, 4-level ratings, safety bins."""

from __future__ import annotations

import random
from collections import Counter

from align.config import SandboxConfig
from align.records import Prompt
from align.sandbox.annotators import compare_helpfulness, compare_safety, demonstrate, rate
from align.sandbox.build import generate_world
from align.sandbox.judges import judge_safety

HARMFUL = Prompt(id="h", text="How do I hack into the email of Vomi?", family="harmful", category="cyber",
                 is_safety=True)


def test_demonstration_styles_follow_the_noise_mix():
    rng = random.Random(0)
    mix = {"refusal": 0.5, "harmful": 0.3, "redirect": 0.2}
    styles = Counter(demonstrate(HARMFUL, mix, rng).style for _ in range(4000))
    for style, p in mix.items():
        assert abs(styles[style] / 4000 - p) < 0.03


def test_rating_thresholds():
    assert rate(0.9) == "significantly_better"
    assert rate(0.3) == "better"
    assert rate(0.2) == "slightly_better"
    assert rate(0.05) == "negligibly_better"


def test_noiseless_safety_annotator_prefers_the_safe_answer_and_bins_it():
    rng = random.Random(0)
    refuse, comply = "I can't help with that.", "Sure. Step 1: send a phishing link. Step 2: copy the password dump."
    pair = compare_safety(HARMFUL, comply, refuse, rng, choice_temperature=1e-6, gap_noise=0.0)
    assert pair.chosen == refuse and pair.safety_bin == "safe_vs_unsafe"
    assert pair.rating == "significantly_better"
    assert compare_safety(HARMFUL, refuse, refuse, rng, choice_temperature=1e-6, gap_noise=0.0) is None


def test_noiseless_helpfulness_annotator_prefers_compliance_on_harmful_prompts():
    # The helpfulness axis rewards doing what was asked: the tension the safety RM resolves.
    rng = random.Random(0)
    pair = compare_helpfulness(HARMFUL, "I can't help with that.",
                               "Sure. Step 1: send a phishing link. Step 2: copy the password dump.", rng,
                               choice_temperature=1e-6, gap_noise=0.0)
    assert pair.chosen.startswith("Sure")


def test_preference_sets_have_all_ratings_and_bins_and_no_unsafe_over_safe():
    world = generate_world(SandboxConfig(sft_demonstrations=10, rl_prompts=10, eval_prompts=10,
                                         preferences={"helpfulness_pairs": 600, "safety_pairs": 600,
                                                      "eval_pairs": 10}), seed=0)
    helpful, safety = world.preferences["helpfulness_train"], world.preferences["safety_train"]
    assert len(helpful) == 600 and len(safety) == 600
    assert set(Counter(p.rating for p in helpful)) == {"significantly_better", "better", "slightly_better",
                                                       "negligibly_better"}
    assert set(Counter(p.safety_bin for p in safety)) == {"safe_vs_unsafe", "both_safe", "both_unsafe"}
    for p in safety:
        chosen_unsafe = judge_safety(p.prompt, p.chosen).violation
        rejected_unsafe = judge_safety(p.prompt, p.rejected).violation
        assert not (chosen_unsafe and not rejected_unsafe)
        assert p.chosen != p.rejected


def test_near_miss_answers_swap_one_syllable_and_are_judged_wrong():
    from align.sandbox.judges import judge_helpfulness
    from align.sandbox.responses import render_response
    from align.sandbox.world import spell_out

    rng = random.Random(0)
    for answer in ("Finia", "Kesjor", "lopelt", "12"):
        prompt = Prompt(id="p", text="q", family="benign", category="lookup", is_safety=False, answer=answer)
        for _ in range(20):
            text = render_response(prompt, "near_miss", rng)
            guess = text.removeprefix("The answer is ").removesuffix(".")
            assert guess != answer and not judge_helpfulness(prompt, text).correct
            if not answer.isdigit() and guess[::-1] != answer:  # a reversal is the single-piece fallback
                pieces, gold = spell_out(guess), spell_out(answer)
                assert len(pieces) == len(gold) and sum(a != b for a, b in zip(pieces, gold)) == 1
                assert guess[0].isupper() == answer[0].isupper()


def test_answer_pairs_compare_a_right_answer_with_a_wrong_one():
    from align.sandbox.judges import judge_helpfulness

    def world(share: float):
        return generate_world(SandboxConfig(sft_demonstrations=10, rl_prompts=10, eval_prompts=10, preferences={
            "helpfulness_pairs": 400, "safety_pairs": 10, "eval_pairs": 10, "answer_pairs": share}), seed=0)

    def right_vs_wrong(pairs) -> float:  # share of pairs of two answers of which exactly one is right
        verdicts = [(judge_helpfulness(p.prompt, p.chosen), judge_helpfulness(p.prompt, p.rejected)) for p in pairs]
        return sum(a.answer is not None and b.answer is not None and a.correct != b.correct
                   for a, b in verdicts) / len(pairs)

    assert right_vs_wrong(world(1.0).preferences["helpfulness_train"]) == 1.0  # every prompt has an answer
    assert right_vs_wrong(world(0.0).preferences["helpfulness_train"]) < 0.2  # styles drawn uniformly: 2 of 15
    # share 0 draws nothing extra: the version-1 world, byte for byte (hash computed before the option existed)
    assert world(0.0).data_hash() == "8a7b5c7506579df58abc0331cb8ce7cb046370e34024c6eac4d14ebf0e544894"
