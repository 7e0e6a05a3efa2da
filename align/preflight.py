"""Pre-flight: every check a campaign can make before it builds a round, run before the first one.

A campaign on a real model runs for days; it must refuse bad input before it spends any of them.
Each stage declares what it will read (``Stage.check(cfg, spec) -> problems``) with the helpers
here: model and tokenizer folders (the config parses, safetensors are present, the tokenizer loads,
the weights' shapes are the config's), data specs and files (the fields the stage reads are in the
first rows), prompt sets that are not empty, lengths that fit. ``preflight`` runs them all, with the
run directory's own check; ``align run`` refuses with the first problem and writes nothing
(``align run --dry-run`` prints them all, with the plan).

A problem is one line, ``FILE: KEY: what is wrong (what to do)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from align.errors import AlignError

ROWS = 20  # the first rows of a data file that are parsed
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def run_dir_problems(run_dir: Path) -> list[str]:
    """The run directory can be created (or is a folder) and written."""
    if run_dir.exists():
        if not run_dir.is_dir():
            return [f"{run_dir}: --run-dir: exists and is not a folder (give another --run-dir)"]
        return [] if os.access(run_dir, os.W_OK | os.X_OK) else [
            f"{run_dir}: --run-dir: not writable (give a --run-dir you can write to)"]
    parent = run_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"{run_dir}: --run-dir: {parent} is a file, so it cannot be created (give another --run-dir)"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"{run_dir}: --run-dir: cannot be created, {parent} is not writable (give another --run-dir)"]
    return []


def out_file_problems(path: Path, flag: str) -> list[str]:
    """An output file can be written: its folder exists and it is not a folder itself."""
    if path.is_dir():
        return [f"{path}: {flag}: is a folder (give a file name)"]
    if not path.parent.is_dir():
        return [f"{path}: {flag}: folder {path.parent} does not exist (create it, or give another path)"]
    if not os.access(path.parent, os.W_OK):
        return [f"{path}: {flag}: folder {path.parent} is not writable"]
    return []


# ----------------------------------------------------------------------------- models ---
def model_problems(path: str | Path, key: str, *, causal: bool = True, trust_remote_code: bool = False,
                   tokenizer: bool = True) -> list[str]:
    """A local Hugging Face model folder: config.json parses (as JSON, then as a transformers config),
    safetensors weights are present and their shapes are the config's, the tokenizer loads and fits
    the embedding. No weights are loaded (the model is built on the meta device)."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder}: {key}: no such model folder (give a local Hugging Face model folder)"]
    config_file = folder / "config.json"
    if not config_file.is_file():
        return [f"{folder}: {key}: no config.json (not a Hugging Face model folder)"]
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        where = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        return [f"{config_file}{where}: {key}: config.json is not valid JSON ({_first_line(e)})"]
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises several types for a config it cannot read
        return [f"{config_file}: {key}: transformers cannot read it ({_first_line(e)})"]
    problems = []
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        problems.append(f"{folder}: {key}: no *.safetensors weights (align loads safetensors only, never pickle)")
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and hidden and hidden % heads:
        problems.append(f"{config_file}: {key}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    elif weights:
        problems += _shape_problems(folder, weights, config, key, causal=causal, trust_remote_code=trust_remote_code)
    if tokenizer:
        problems += _tokenizer_problems(folder, key, getattr(config, "vocab_size", None), trust_remote_code)
    return problems


def _shape_problems(folder: Path, weights: list[Path], config: Any, key: str, *, causal: bool,
                    trust_remote_code: bool) -> list[str]:
    """Each tensor of the checkpoint that the config's model has (matched by name, up to a prefix) has
    the config's shape."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModel, AutoModelForCausalLM

    try:
        with torch.device("meta"):
            auto = AutoModelForCausalLM if causal else AutoModel
            model = auto.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as e:  # an architecture this transformers cannot build
        return [f"{folder / 'config.json'}: {key}: transformers cannot build this model ({_first_line(e)})"]
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = []
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as f:
                shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
        except Exception as e:  # a truncated or garbled file
            problems.append(f"{file}: {key}: not a readable safetensors file ({_first_line(e)})")
            continue
        for name, shape in shapes.items():
            match = expected.get(name) or next((s for n, s in expected.items() if n.endswith("." + name)
                                                or name.endswith("." + n)), None)
            if match is not None and match != shape:
                problems.append(f"{file}: {key}: tensor {name} has shape {list(shape)}, the config's model expects "
                                f"{list(match)} (config.json and the weights disagree)")
                break
    return problems


def _tokenizer_problems(folder: Path, key: str, vocab_size: int | None, trust_remote_code: bool) -> list[str]:
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return [f"{folder}: {key}: no tokenizer files ({', '.join(TOKENIZER_FILES)}; save the tokenizer with the "
                "model)"]
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as e:  # a tokenizer file transformers cannot read
        return [f"{folder}: {key}: the tokenizer does not load ({_first_line(e)})"]
    if vocab_size and len(tok) > vocab_size:
        return [f"{folder}: {key}: the tokenizer has {len(tok)} tokens, more than the model's vocab_size {vocab_size}"]
    return []


# ------------------------------------------------------------------------------- data ---
def source_problems(spec_path: str | Path, path: str | Path | None, key: str, *, kind: str) -> list[str]:
    """A data spec and its file: the spec loads and reads ``kind`` (pairs or prompts), the file exists,
    and its first rows parse as the spec says."""
    from align.data import load_spec, peek

    try:
        spec = load_spec(spec_path)
        if spec.kind != kind:
            return [f"{spec_path}: {key}: kind: the spec reads {spec.kind}, this stage reads {kind}"]
        parsed = peek(spec, Path(path) if path else None, ROWS)
    except AlignError as e:
        return [f"{e} ({key})"]
    if parsed == 0:
        return [f"{path or spec_path}: {key}: no usable rows among the first {ROWS}"]
    return []


def rl_prompt_problems(cfg: Any, stage: str) -> list[str]:
    """The sandbox's RL prompt set, which ``stage`` samples from, is not empty."""
    n = cfg.sandbox.rl_prompts
    return [] if n >= 1 else [f"sandbox.rl_prompts: {n}: the {stage} stage samples answers to no prompts (set it to 1 "
                              "or more)"]


def jsonl_problems(path: str | Path, key: str, read: Callable[[Path], Iterable[Any]]) -> list[str]:
    """A JSONL file a stage reads whole with ``read`` (which names the bad line)."""
    try:
        return [] if list(read(Path(path))) else [f"{path}: {key}: no rows"]
    except AlignError as e:
        return [f"{e} ({key})"]


def first(problems: list[str]) -> None:
    """Raise the first problem as the error (with how many more there are)."""
    if problems:
        more = f" (and {len(problems) - 1} more problem(s): align run --dry-run lists them)" if len(problems) > 1 \
            else ""
        raise AlignError(problems[0] + more)


def preflight(cfg: Any, plans: Iterable[Any], run_dir: Path | None) -> list[str]:
    """Every stage's checks for the rounds to build (each problem once), and the run directory's."""
    from align.stages import get_stage

    problems: list[str] = run_dir_problems(run_dir) if run_dir is not None else []
    for plan in plans:
        for problem in get_stage(plan.kind).check(cfg, plan.spec):
            if problem not in problems:
                problems.append(problem)
    return problems
