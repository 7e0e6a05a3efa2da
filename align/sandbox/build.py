"""Build the sandbox world into a directory: prompts, demonstrations, preferences, tokenizer.

Files (all JSONL of ``align.records``): ``sft.jsonl`` (demonstrations), ``rl_prompts.jsonl``
(training prompts for later rounds), ``eval_prompts.jsonl`` (held-out), ``prefs_{helpfulness,
safety}_{train,eval}.jsonl``; ``tokenizer/``; ``world.json`` (version, seed, counts, hashes).
Everything is a pure function of the sandbox config and the seed. The ``read_*`` functions are the
only code that knows these names: stages read a world through them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from align.records import Demonstration, PreferencePair, Prompt, content_hash, read_records, write_jsonl
from align.sandbox.annotators import Annotators, demonstrate, risk_note_responses, sample_pair_responses
from align.sandbox.config import PreferenceConfig, SandboxConfig
from align.sandbox.tokenizer import train_tokenizer
from align.sandbox.world import Entities, Template, build_entities, entity_pieces, sample_prompts, spell_out, templates_for


@dataclass(frozen=True)
class World:
    """The generated datasets of one sandbox world."""

    entities: Entities
    demonstrations: list[Demonstration]
    rl_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    preferences: dict[str, list[PreferencePair]]  # "{axis}_{split}" -> pairs

    def data_hash(self) -> str:
        return content_hash([*self.demonstrations, *self.rl_prompts, *self.eval_prompts,
                             *(p for k in sorted(self.preferences) for p in self.preferences[k])])


def generate_world(cfg: SandboxConfig, seed: int) -> World:
    """All datasets of the world for ``seed``; deterministic."""
    entities = build_entities(seed, cfg.heldout_fraction)
    train_mix, eval_mix = cfg.train_mix.model_dump(), cfg.eval_mix.model_dump()
    tagged, templates = cfg.borderline_tagged, templates_for(cfg.version)
    rng = random.Random(f"demonstrations:{seed}")
    sft_prompts = sample_prompts(entities, split="train", n=cfg.sft_demonstrations, family_weights=train_mix,
                                 seed=seed, tag="sft", borderline_tagged=tagged, templates=templates)
    mix = cfg.demonstrations.model_dump()
    demos = [demonstrate(p, mix[p.family], rng) for p in sft_prompts]
    rl_prompts = sample_prompts(entities, split="train", n=cfg.rl_prompts, family_weights=train_mix, seed=seed, tag="rl",
                                borderline_tagged=tagged, templates=templates)
    eval_prompts = sample_prompts(entities, split="eval", n=cfg.eval_prompts, family_weights=eval_mix, seed=seed,
                                  tag="eval", borderline_tagged=tagged, templates=templates)
    prefs = {}
    pc = cfg.preferences
    annotators = Annotators.from_config(pc)
    for split, n_help, n_safe in (("train", pc.helpfulness_pairs, pc.safety_pairs),
                                  ("eval", pc.eval_pairs, pc.eval_pairs)):
        mix_ = train_mix if split == "train" else eval_mix
        # As in Llama 2 (section 3.2.1), helpfulness annotation uses the helpfulness prompts and
        # adversarial prompts go to safety annotation; borderline prompts go to both.
        for axis, n in (("helpfulness", n_help), ("safety", n_safe)):
            prefs[f"{axis}_{split}"] = _pairs(entities, axis, split, n, annotators.family_weights(axis, mix_), seed,
                                              pc, annotators, tagged, templates)
    return World(entities, demos, rl_prompts, eval_prompts, prefs)


def _pairs(entities: Entities, axis: str, split: str, n: int, family_weights: dict[str, float], seed: int,
           pc: PreferenceConfig, annotators: Annotators, tagged: float, templates: tuple[Template, ...]
           ) -> list[PreferencePair]:
    """``n`` preference pairs on ``axis``; prompts are drawn until enough pairs survive the annotator."""
    rng = random.Random(f"preferences:{seed}:{axis}:{split}")
    pairs: list[PreferencePair] = []
    batch = 0
    while len(pairs) < n:
        prompts = sample_prompts(entities, split=split, n=max(n, 16), family_weights=family_weights, seed=seed,
                                 tag=f"pref-{axis}-{batch}", borderline_tagged=tagged, templates=templates)
        for p in prompts:
            comparisons = [sample_pair_responses(p, rng, pc.answer_pairs, pc.answer_errors)]
            if pc.risk_note_pairs and p.family == "borderline" and rng.random() < pc.risk_note_pairs:
                comparisons.append(risk_note_responses(p, rng))
            for a, b in comparisons:
                pair = annotators.compare(p, a, b, axis, rng)
                if pair is not None and len(pairs) < n:
                    pairs.append(pair)
            if len(pairs) == n:
                break
        batch += 1
    return pairs


def _spell_entities(texts: list[str], entities: Entities) -> list[str]:
    """Texts with every entity written as spaced syllables, for tokenizer training only."""
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, entities.all()), key=len, reverse=True)) + r")\b")
    return [pattern.sub(lambda m: " ".join(spell_out(m.group(1))), t) for t in texts]


def write_world(world: World, cfg: SandboxConfig, seed: int, out: Path) -> dict:
    """Write the world's files and tokenizer into ``out``; returns the ``world.json`` summary."""
    out.mkdir(parents=True, exist_ok=True)
    hashes = {"sft.jsonl": write_jsonl(out / "sft.jsonl", world.demonstrations),
              "rl_prompts.jsonl": write_jsonl(out / "rl_prompts.jsonl", world.rl_prompts),
              "eval_prompts.jsonl": write_jsonl(out / "eval_prompts.jsonl", world.eval_prompts)}
    for key, pairs in world.preferences.items():
        hashes[f"prefs_{key}.jsonl"] = write_jsonl(out / f"prefs_{key}.jsonl", pairs)
    texts = [d.prompt.text for d in world.demonstrations] + [d.response for d in world.demonstrations]
    texts += [p.text for p in world.rl_prompts]
    train_tokenizer(_spell_entities(texts, world.entities), vocab_size=cfg.tokenizer_vocab_size,
                    atoms=entity_pieces()).save_pretrained(tokenizer_dir(out))
    summary = {
        "sandbox_version": cfg.version, "seed": seed, "data_hash": world.data_hash(), "files": hashes,
        "counts": {"sft": len(world.demonstrations), "rl_prompts": len(world.rl_prompts),
                   "eval_prompts": len(world.eval_prompts),
                   **{f"prefs_{k}": len(v) for k, v in world.preferences.items()}},
        "entities": {kind: {"train": len(getattr(world.entities, kind)[0]), "eval": len(getattr(world.entities, kind)[1])}
                     for kind in ("names", "places", "words")},
    }
    (out / "world.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


# ------------------------------------------------------------------------------ reading ---
def is_world(folder: Path) -> bool:
    """``folder`` holds a built world."""
    return (folder / "world.json").is_file()


def read_demonstrations(world: Path) -> list[Demonstration]:
    return read_records(world / "sft.jsonl", Demonstration)


def read_prompts(world: Path, split: str) -> list[Prompt]:
    """The world's ``rl`` (training) or ``eval`` (held-out) prompts."""
    if split not in ("rl", "eval"):
        raise ValueError(f"split is rl or eval, not {split!r}")
    return read_records(world / f"{split}_prompts.jsonl", Prompt)


def read_preferences(world: Path, axis: str, split: str) -> list[PreferencePair]:
    """The world's preference pairs of ``axis`` (helpfulness or safety), ``train`` or ``eval`` split."""
    return read_records(world / f"prefs_{axis}_{split}.jsonl", PreferencePair)


def tokenizer_dir(world: Path) -> Path:
    return world / "tokenizer"
