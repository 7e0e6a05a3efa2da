"""The sandbox stage (align/stages/sandbox.py): the world's files in its round, and what rebuilds it."""

from __future__ import annotations

from conftest import manifest, statuses

from align.sandbox.build import is_world, read_preferences, read_prompts


def test_the_world_round_holds_the_world_and_its_counts(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    world = run_dir / "rounds" / "00-sandbox"
    assert is_world(world) and (world / "tokenizer" / "tokenizer.json").is_file()
    m = manifest(run_dir, "00-sandbox")
    assert m["parents"] == [] and m["metrics"]["counts"]["eval_prompts"] == len(read_prompts(world, "eval")) == 64
    assert len(read_prompts(world, "rl")) == 64 and len(read_preferences(world, "safety", "train")) == 200
    # the slice is what generate_world and write_world read: the sandbox section, nothing else
    assert m["config"]["seed"] == 0 and all(k == "seed" or k.startswith("sandbox.") for k in m["config"])
    assert {"sandbox.preferences.risk_note_pairs", "sandbox.tokenizer_vocab_size", "sandbox.train_mix"} <= \
        set(m["config"])
    # the version is read to build (world.json records it): a campaign that changes it rebuilds the world
    assert m["config"]["sandbox.version"] == 3 and m["config"]["sandbox.borderline_tagged"] == 0.05
    assert m["config"]["sandbox.preferences.answer_pairs"] == 0.5  # world 3's right-against-wrong pairs


def test_a_world_field_rebuilds_every_round_and_other_fields_keep_the_world(completed_smoke_run):
    run_dir, _ = completed_smoke_run
    assert set(statuses(run_dir, "sandbox.preferences.gap_noise=0.1").values()) == {"stale"}
    after = statuses(run_dir, "sft.lr=0.001")
    assert after["00-sandbox"] == "completed" and after["01-sft"] == "stale"
    assert set(statuses(run_dir, "tracking.backend=tensorboard").values()) == {"completed"}  # no round file changes
