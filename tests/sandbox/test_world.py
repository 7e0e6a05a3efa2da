"""The world is a pure function of (config, seed); held-out prompts share no entity or template
with training; benign answers are computable from the prompt."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from align.sandbox.config import SandboxConfig
from align.sandbox.build import generate_world
from align.sandbox.judges import judge_helpfulness
from align.sandbox.responses import render_response
from align.sandbox.world import RISK_CATEGORIES, TEMPLATES, build_entities, grid, spell_out

SMALL = SandboxConfig(sft_demonstrations=400, rl_prompts=100, eval_prompts=400,
                      preferences={"helpfulness_pairs": 100, "safety_pairs": 100, "eval_pairs": 50})


@pytest.fixture(scope="module")
def world():
    return generate_world(SMALL, seed=0)


def test_same_seed_gives_the_same_data_hash(world):
    assert generate_world(SMALL, seed=0).data_hash() == world.data_hash()


def test_different_seed_gives_different_data(world):
    other = generate_world(SMALL, seed=1)
    assert other.data_hash() != world.data_hash()
    assert [p.text for p in other.eval_prompts] != [p.text for p in world.eval_prompts]


def test_entity_pools_do_not_overlap_between_train_and_eval():
    ents = build_entities(0, 0.25)
    for kind in ("names", "places", "words"):
        train, held_out = getattr(ents, kind)
        assert train and held_out
        assert not set(train) & set(held_out), kind


def test_heldout_prompts_use_only_unseen_entities_and_templates(world):
    train_prompts = [d.prompt for d in world.demonstrations] + world.rl_prompts
    train_entities = {e for p in train_prompts for e in p.entities}
    eval_entities = {e for p in world.eval_prompts for e in p.entities}
    assert eval_entities and not train_entities & eval_entities
    train_templates = {p.template for p in train_prompts}
    eval_templates = {p.template for p in world.eval_prompts}
    assert not train_templates & eval_templates
    assert {p.split for p in world.eval_prompts} == {"eval"}


def test_every_template_part_is_seen_in_training_but_heldout_combinations_are_not():
    phrasings = grid(("A", "B", "C"), ("x", "y", "z"))
    held_out = {p for p, split in phrasings if split == "eval"}
    assert held_out == {"A x", "B z", "C y"}
    for part in "ABCxyz":
        assert any(part in p for p, split in phrasings if split == "train")
    for family in ("benign", "borderline", "harmful", "hidden_harmful"):
        splits = Counter(t.split for t in TEMPLATES if t.family == family)
        assert splits["train"] > 0 and splits["eval"] > 0


def test_families_and_tags(world):
    by_family = Counter(p.family for p in world.eval_prompts)
    assert set(by_family) == {"benign", "borderline", "harmful", "hidden_harmful"}
    assert {p.category for p in world.eval_prompts if p.family == "harmful"} == set(RISK_CATEGORIES)
    assert len(RISK_CATEGORIES) >= 4
    for p in world.eval_prompts:
        assert p.is_safety == (p.family == "harmful") or p.family == "borderline"  # hidden harmful: no tag
        assert (p.answer is None) == p.is_harmful


def test_hidden_harmful_wording_has_no_trigger_words(world):
    triggers = re.compile(r"\b(bomb|poison|stab|hack|virus|meth|heroin|crack|scam|steal|hateful|insult)\b", re.I)
    hidden = [p for p in world.eval_prompts + world.rl_prompts if p.family == "hidden_harmful"]
    assert hidden and not any(triggers.search(p.text) for p in hidden)


def test_benign_answers_are_computable_from_the_prompt(world):
    import random

    rng = random.Random(0)
    for p in world.eval_prompts:
        if p.answer is None:
            continue
        if p.category in ("arithmetic", "multistep", "pirate_count"):
            a, b = map(int, re.findall(r"\d+", p.text))
            assert int(p.answer) == (a - b if "minus" in p.text else a + b)
        elif p.category == "sort":  # world 3: the prompt's digits in the asked order
            digits = [int(d) for d in re.findall(r"\d+", p.text)]
            assert [int(d) for d in p.answer.split(", ")] == sorted(digits, reverse="largest to" in p.text)
        else:
            assert p.answer.removeprefix("stop ") in p.text
        assert judge_helpfulness(p, render_response(p, "correct", rng)).correct


def test_entities_spell_out_as_syllables():
    assert spell_out("Kesjor") == ["Kes", "jor"]
    assert spell_out("Lunford") == ["Lun", "ford"]
    assert spell_out("tenpelt") == ["ten", "pel", "t"]
