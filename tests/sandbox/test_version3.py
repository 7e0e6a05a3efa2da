"""World version 3 (align/sandbox/config.py, world.py, responses.py): an ordering task in place of the list
task, and answer comparisons that pit a right answer against the tiny policy's own kind of slip. Versions 1
and 2 still build byte for byte."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from align.records import Prompt
from align.sandbox.build import generate_world
from align.sandbox.config import SandboxConfig
from align.sandbox.judges import judge_helpfulness
from align.sandbox.responses import answer_candidates, render_response
from align.sandbox.world import spell_out

TINY = {"sft_demonstrations": 40, "rl_prompts": 40, "eval_prompts": 40,
        "preferences": {"helpfulness_pairs": 40, "safety_pairs": 40, "eval_pairs": 20}}
# data_hash of these worlds computed at the commit before version 3 existed (5c15843)
BEFORE_VERSION_3 = {
    (1, 0): "5b4100e49ae20029d4d88e6f3c967957142cd53bebeadb577374d99982ea7f7e",
    (1, 1): "294331a580f44fd7e77f52a7c605d7d3e84b381a1e5a10d56c36f343d547ee70",
    (2, 0): "975a38ebcf2240a69d4e1a8949b0c1c3eca4808f0ec4f73f0979947bc9c27688",
    (2, 1): "45f31cc3c0f01a315478ba794114194bc374b071e9ccf48bc2add679ec0c57a6",
}
SORT = Prompt(id="s", text="Sort 8, 5, 1 from smallest to largest.", family="benign", category="sort",
              is_safety=False, answer="1, 5, 8")
LOOKUP = Prompt(id="l", text="Oslun lives in Zuford. Where does Oslun live?", family="benign", category="lookup",
                is_safety=False, answer="Zuford", entities=("Oslun", "Zuford"))


@pytest.mark.parametrize("version,seed", sorted(BEFORE_VERSION_3))
def test_versions_1_and_2_build_byte_for_byte(version, seed):
    assert generate_world(SandboxConfig(version=version, **TINY), seed).data_hash() == BEFORE_VERSION_3[version, seed]


def test_the_default_is_version_3_and_it_fills_in_its_defaults():
    assert SandboxConfig().version == 3
    assert generate_world(SandboxConfig(**TINY), 0).data_hash() == generate_world(SandboxConfig(version=3, **TINY), 0).data_hash()
    assert SandboxConfig(version=2).preferences.answer_pairs == 0.0
    v3 = SandboxConfig()
    assert (v3.preferences.answer_pairs, v3.preferences.answer_errors) == (0.5, ("slip", "wrong", "near_miss"))
    # hidden harmful requests reach safety annotation at the family mix's weight (version 2: a quarter of it)
    assert (v3.preferences.safety_hidden_weight, SandboxConfig(version=2).preferences.safety_hidden_weight) == (1.0, 0.25)
    assert SandboxConfig(version=3, preferences={"answer_pairs": 0.2}).preferences.answer_pairs == 0.2
    with pytest.raises(ValidationError, match="answer_errors"):
        SandboxConfig(version=3, preferences={"answer_errors": ["typo"]})


@pytest.fixture(scope="module")
def v3():
    return generate_world(SandboxConfig(version=3, sft_demonstrations=600, rl_prompts=40, eval_prompts=600,
                                        preferences={"helpfulness_pairs": 3000, "safety_pairs": 40,
                                                     "eval_pairs": 20}), 0)


def test_version_3_orders_numbers_in_place_of_the_list_task(v3):
    for prompts in (v3.eval_prompts, [d.prompt for d in v3.demonstrations]):
        cats = Counter(p.category for p in prompts if p.family == "benign")
        assert set(cats) == {"lookup", "arithmetic", "sort", "multistep"}
    sorts = [p for p in v3.eval_prompts if p.category == "sort"]
    assert len(sorts) > 30
    for p in sorts:
        given = [int(d) for d in re.findall(r"\d", p.text)]
        wanted = sorted(given, reverse="largest to smallest" in p.text)
        assert len(set(given)) == 3 and given != wanted  # three distinct digits, never already in order
        assert p.answer == ", ".join(map(str, wanted))
        assert judge_helpfulness(p, f"The answer is {p.answer}.").correct


def test_slips_are_the_small_policys_errors():
    rng = random.Random(0)
    for _ in range(50):
        slip = render_response(SORT, "slip", rng).removeprefix("The answer is ").rstrip(".").split(", ")
        assert slip != ["1", "5", "8"] and len(slip) == 3
        # one number off (not in the prompt) or one number doubled
        assert set(slip) - {"1", "5", "8"} <= {"0", "2", "4", "6", "7", "9"} and (
            len(set(slip) - {"1", "5", "8"}) == 1 or len(set(slip)) == 2)
        entity = render_response(LOOKUP, "slip", rng).removeprefix("The answer is ").rstrip(".")
        assert entity != "Zuford" and set(spell_out(entity)) <= {"Zu", "ford", "Os", "lun"}
    arithmetic = Prompt(id="a", text="What is 4 plus 5?", family="benign", category="arithmetic", is_safety=False,
                        answer="9")
    assert {render_response(arithmetic, "slip", rng) for _ in range(40)} == {"The answer is 8.", "The answer is 10."}
    lineup = answer_candidates(SORT, rng, wrong_styles=("slip", "wrong", "near_miss"))
    assert lineup[0] == "The answer is 1, 5, 8." and len(set(lineup)) == 5
    assert not any(judge_helpfulness(SORT, c).correct for c in lineup[1:])


def test_half_of_the_answer_comparisons_pit_right_against_wrong(v3):
    pairs = [p for p in v3.preferences["helpfulness_train"] if p.prompt.answer is not None]
    right_wrong = [p for p in pairs if judge_helpfulness(p.prompt, p.chosen).correct
                   != judge_helpfulness(p.prompt, p.rejected).correct]
    assert 0.5 < len(right_wrong) / len(pairs) < 0.7  # 0.5 drawn as such, and some of the random style pairs
    # a third of the wrong answers are slips: on the ordering task, a number off or doubled (the other wrong
    # styles reorder the prompt's numbers)
    sorts = [p for p in right_wrong if p.prompt.category == "sort" and "answer is" in p.rejected]
    off = [p for p in sorts if sorted(re.findall(r"\d", p.rejected)) != sorted(re.findall(r"\d", p.prompt.text))]
    assert len(sorts) > 40 and 0.2 < len(off) / len(sorts) < 0.5
