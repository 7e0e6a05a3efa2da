"""The campaign store: immutable, hashed rounds written atomically, and one writer at a time.

DESIGN.md section 4. A round is built in ``rounds/.tmp-<id>-<pid>/``; its files are hashed and
synced, ``manifest.json`` is written last, and the folder is renamed into place. A killed run
leaves at most a temporary folder, which the next run removes under the lock. A completed round
is never modified: when a round must be rebuilt, the old one is moved to ``rounds/.superseded/``.

Integrity: the manifest lists every output file's sha256, size and mtime, and covers itself
(``manifest_sha256``, the digest of the rest of its content): an edited manifest is refused when
read. ``check`` is the fast check every reuse runs (a file whose size and mtime are as recorded is
taken as unchanged; any other is rehashed); ``verify`` rehashes everything.

This module is the only code that knows the layout: round ids (``round_id``), folder names, and
the names of the artifacts inside a round (``Round``). Stages get their parents as a ``Parents``
record of ``Round``s and never build a path by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from align.errors import AlignError

MANIFEST = "manifest.json"
LOCK = ".lock"
ROUNDS = "rounds"
_LIBRARIES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "datasets", "safetensors", "pydantic")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` but the manifest, by relative POSIX path."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p != folder / MANIFEST}


def hash_outputs(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (but the manifest), by relative POSIX path."""
    return {name: sha256_file(p) for name, p in output_files(folder).items()}


def digest(mapping: dict[str, Any]) -> str:
    """One sha256 over a JSON-able mapping (sorted keys): the identity of a config or file set."""
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()


def file_stat(path: Path) -> list[int]:
    """``[size, mtime_ns]``: what the fast check compares before it rehashes a file."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The digest a manifest records of itself: every field but ``manifest_sha256``."""
    return digest({k: v for k, v in manifest.items() if k != "manifest_sha256"})


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def code_version() -> str:
    """align's version, with the git commit (and ``-dirty``) when run from a checkout."""
    from align import __version__

    here = Path(__file__).parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return f"{__version__}+g{rev.stdout.strip()}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def crash_point(point: str, round_id: str) -> None:
    """Fault injection for the resume tests: SIGKILL this process at a named point (``point:round``; with
    ``@R`` appended, only the process of rank R of a multi-process launch)."""
    target, _, rank = os.environ.get("ALIGN_CRASH_AT", "").partition("@")
    if target == f"{point}:{round_id}" and (not rank or rank == os.environ.get("RANK", "0")):
        os.kill(os.getpid(), 9)


def tracking_dir(run_dir: Path, round_id: str) -> Path:
    """Where an experiment tracker writes a round's logs (outside the round: they are not hashed)."""
    return run_dir / "tracking" / round_id


def checkpoint_dir(run_dir: Path, round_id: str) -> Path:
    """Where a round's stage keeps the checkpoints of an unfinished build (``align.rl.checkpoint``)."""
    return run_dir / ROUNDS / ".checkpoints" / round_id


def round_id(index: int, kind: str, name: str | None) -> str:
    """The id (and folder name) of the ``index``-th stage's round: ``<NN>-<kind>[-<name>]``."""
    return f"{index:02d}-{kind}" + (f"-{name}" if name else "")


def eval_round_id(suite: str, source: str) -> str:
    """The id of an evaluation round made outside the campaign's stages (``align eval``): the suite and
    what it evaluated (a policy round's id, or ``model-<digest>`` for a checkpoint given by path)."""
    return f"eval-{suite}-{source}"


def newest(rounds: Sequence[Any], kind: str, name: str | None = None) -> Any | None:
    """The last of ``rounds`` (anything with ``kind`` and ``name``) of ``kind`` (and ``name``), or None."""
    found = [r for r in rounds if r.kind == kind and (name is None or r.name == name)]
    return found[-1] if found else None


def _artifact(name: str, doc: str) -> property:
    return property(lambda self: self.path / name, doc=doc)


@dataclass(frozen=True)
class Round:
    """A round's folder and the names of the artifacts stages write into it and read from it."""

    id: str
    kind: str
    name: str | None
    path: Path

    model = _artifact("model", "A policy checkpoint (``save_pretrained``: safetensors and tokenizer).")
    adapter = _artifact("adapter", "A LoRA adapter of the policy.")
    reward_model = _artifact("rm", "A reward model checkpoint (a one-output sequence classifier).")
    samples = _artifact("samples.jsonl", "Every sample a round drew and how it was scored (JSONL).")
    eval_samples = _artifact("eval_samples.jsonl", "The judged answers of an evaluation (JSONL).")
    step_metrics = _artifact("metrics.jsonl", "Training step metrics (JSONL).")

    def preferences(self, axis: str) -> Path:
        """Preference pairs of ``axis`` collected by the round (JSONL of ``PreferencePair``)."""
        return self.path / f"prefs_{axis}.jsonl"

    def file(self, name: str) -> Path:
        """Another artifact of this round, by file name."""
        return self.path / name


@dataclass(frozen=True)
class Parents:
    """The rounds a round builds on, in campaign order, looked up by kind (never by parsing ids).

    ``policy_kinds`` are the kinds whose rounds hold a policy (``Stage.policy``)."""

    rounds: tuple[Round, ...]
    policy_kinds: frozenset[str] = frozenset()

    def find(self, kind: str, name: str | None = None) -> Round | None:
        """The newest parent of ``kind`` (and ``name``), or None."""
        return newest(self.rounds, kind, name)

    def of(self, kind: str, name: str | None = None) -> Round:
        """The newest parent of ``kind`` (and ``name``)."""
        found = self.find(kind, name)
        if found is None:
            what = kind + (f" {name}" if name else "")
            raise AlignError(f"no {what} round among the parents ({', '.join(r.id for r in self.rounds) or 'none'})")
        return found

    def prior(self, kind: str) -> list[Round]:
        """Every parent of ``kind``, oldest first."""
        return [r for r in self.rounds if r.kind == kind]

    def rm(self, axis: str) -> Round:
        """The reward-model round of ``axis`` (helpfulness or safety)."""
        return self.of("rm", axis)

    @property
    def sandbox(self) -> Round:
        return self.of("sandbox")

    @property
    def sft(self) -> Round:
        return self.of("sft")

    def find_policy(self) -> Round | None:
        """The newest parent that holds a policy, or None."""
        found = [r for r in self.rounds if r.kind in self.policy_kinds]
        return found[-1] if found else None

    @property
    def policy(self) -> Round:
        """The newest parent that holds a policy."""
        found = self.find_policy()
        if found is None:
            raise AlignError(f"no policy round among the parents ({', '.join(r.id for r in self.rounds) or 'none'})")
        return found


@dataclass(frozen=True)
class RoundRecord:
    """A completed round as its manifest describes it."""

    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def round(self) -> Round:
        return Round(self.id, self.manifest.get("kind", ""), self.manifest.get("name"), self.path)


class CampaignStore:
    """The rounds of one run directory."""

    def __init__(self, run_dir: Path):
        if run_dir.exists() and not run_dir.is_dir():
            raise AlignError(f"{run_dir}: run directory exists and is not a directory")
        self.run_dir = run_dir
        self.rounds_dir = run_dir / ROUNDS

    # -- reading ------------------------------------------------------------------------
    def round_ids(self) -> list[str]:
        if not self.rounds_dir.is_dir():
            return []
        return sorted(p.name for p in self.rounds_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def read(self, round_id: str) -> RoundRecord | None:
        """The completed round ``round_id``, None if absent; a corrupted manifest is an AlignError."""
        path = self.rounds_dir / round_id
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict):
                raise ValueError("not a manifest object with 'outputs'")
        except (ValueError, UnicodeDecodeError) as e:
            raise AlignError(f"{manifest_path}: corrupted manifest ({e}; delete {path} to rebuild the round)") from None
        recorded = manifest.get("manifest_sha256")  # absent in manifests written before align 0.3
        if recorded is not None and recorded != manifest_digest(manifest):
            raise AlignError(f"{manifest_path}: edited after the round was written (manifest_sha256 does not match "
                             f"its content; restore it, or delete {path} to rebuild the round)")
        return RoundRecord(round_id, path, manifest)

    def latest(self, kind: str, name: str | None = None) -> RoundRecord | None:
        """The newest completed round of ``kind`` (and ``name``), by campaign order."""
        found = [r for r in map(self.read, self.round_ids()) if r is not None and r.manifest.get("kind") == kind
                 and (name is None or r.manifest.get("name") == name)]
        return found[-1] if found else None

    def verify(self, round_id: str) -> list[str]:
        """Problems with a completed round, every file rehashed: each changed, missing or unexpected file,
        or the manifest itself, named."""
        return self.check(round_id, fast=False)

    def check(self, round_id: str, *, fast: bool = True) -> list[str]:
        """``verify``, but (``fast``) a file whose size and mtime are those recorded is not rehashed."""
        try:
            record = self.read(round_id)
        except AlignError as e:
            return [str(e)]
        if record is None:
            return [f"{self.rounds_dir / round_id}: no {MANIFEST}"]
        expected, stats = record.manifest["outputs"], record.manifest.get("output_stats", {}) if fast else {}
        present = output_files(record.path)
        problems = [f"{record.path / f}: missing" for f in sorted(set(expected) - set(present))]
        problems += [f"{record.path / f}: not in the manifest" for f in sorted(set(present) - set(expected))]
        for f in sorted(set(expected) & set(present)):
            stat = file_stat(present[f])
            if f in stats and stat == stats[f]:
                continue
            if f in stats and stat[0] != stats[f][0]:
                problems.append(f"{present[f]}: size changed ({stats[f][0]} bytes written, {stat[0]} now)")
                continue
            found = sha256_file(present[f])
            if found != expected[f]:
                problems.append(f"{present[f]}: sha256 mismatch (expected {expected[f][:12]}, found {found[:12]})")
        return problems

    def require_intact(self, round_id: str, *, why: str = "", fast: bool = True) -> None:
        """``check`` as one error line naming the first bad file and the way to rebuild the round."""
        problems = self.check(round_id, fast=fast)
        if problems:
            more = f"; {len(problems) - 1} more problem(s): align verify {self.run_dir} lists them" \
                if len(problems) > 1 else ""
            what = f"round {round_id}, {why}," if why else f"round {round_id}"
            raise AlignError(f"{problems[0]} ({what} fails its integrity check{more}; restore the file, or delete "
                             f"{self.rounds_dir / round_id} and run again to rebuild it)")

    # -- writing (only under the lock) --------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the campaign's single-writer lock (released by the OS if the process dies)."""
        path = self.run_dir / LOCK
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except (NotADirectoryError, FileExistsError):
            raise AlignError(f"{self.run_dir}: cannot be a run directory (a part of its path is a file)") from None
        except PermissionError:
            raise AlignError(f"{self.run_dir}: not writable (give a --run-dir you can write to)") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
                raise AlignError(f"{self.run_dir}: campaign is locked by another align run ({holder})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                      .encode(), 0)
            self._remove_stale_temporaries()
            yield
        finally:
            os.close(fd)

    def _remove_stale_temporaries(self) -> None:
        if self.rounds_dir.is_dir():
            for p in self.rounds_dir.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True)

    @contextmanager
    def build(self, round_id: str) -> Iterator[Path]:
        """A temporary folder to build ``round_id`` in; removed if the build fails."""
        self.rounds_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.rounds_dir / f".tmp-{round_id}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def commit(self, round_id: str, tmp: Path, manifest: dict[str, Any]) -> RoundRecord:
        """Hash and sync the files, write the manifest last, rename the round into place."""
        crash_point("files-written", round_id)
        outputs = hash_outputs(tmp)
        for f in outputs:
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        manifest = {**manifest, "outputs": outputs, "outputs_digest": digest(outputs), "status": "completed",
                    "output_stats": {f: file_stat(tmp / f) for f in outputs}}
        manifest["manifest_sha256"] = manifest_digest(manifest)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            crash_point("manifest", round_id)  # a kill here leaves half a manifest, in the temporary folder
            f.write(text[len(text) // 2:])
            f.flush()
            os.fsync(f.fileno())
        for d in {tmp, *((tmp / f).parent for f in outputs)}:
            _fsync_dir(d)
        final = self.rounds_dir / round_id
        if final.exists():  # a stale round being rebuilt: keep it, untouched, out of the way
            superseded = self.rounds_dir / ".superseded"
            superseded.mkdir(exist_ok=True)
            os.replace(final, superseded / f"{round_id}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        crash_point("before-rename", round_id)
        os.replace(tmp, final)
        _fsync_dir(self.rounds_dir)
        crash_point("after-rename", round_id)
        return RoundRecord(round_id, final, manifest)
