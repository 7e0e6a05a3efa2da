"""The sandbox stage: build the synthetic world (DESIGN.md section 3).

Parents: none. Writes: the world's prompts, SFT demonstrations, preference pairs and tokenizer
(``align.sandbox.build``), a pure function of the ``sandbox:`` section and the round's seed.
"""

from __future__ import annotations

from typing import Any

from align.sandbox.build import generate_world, write_world
from align.sandbox.config import SandboxConfig
from align.stages import Planned, Stage, StageContext, register


def parents(planned: Planned, cfg, spec) -> list[str]:
    return []


def run(ctx: StageContext) -> dict[str, Any]:
    world = generate_world(ctx.cfg.sandbox, ctx.seed)
    summary = write_world(world, ctx.cfg.sandbox, ctx.seed, ctx.out.path)
    return {"data_hash": summary["data_hash"], "counts": summary["counts"]}


register(Stage(kind="sandbox", run=run, parents=parents, sections={"sandbox": SandboxConfig}, doc=__doc__))
