"""What a stage reads of the config: a read-only view that records every field it reads.

A round's config slice (its manifest's ``config``, digested into ``config_hash``) is exactly the
fields its stage read while it ran, with their values: derived from the code, never written by
hand, so no field a stage reads can be left out of it. The round is reused while those fields keep
their values (``current_slice``). This is sound because a stage is a deterministic function of what
it reads and of its inputs: a change that would send it down another branch changes a field that it
read to choose the branch.

Two parts of the config are never recorded: ``campaign`` and ``tracking`` (names and trackers, no
round file changes with them). A stage may not read ``stages`` or ``ablation``: it gets its own stage
spec, and reading the list would tie its round to stages that come after it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

UNRECORDED = ("campaign", "tracking")
FORBIDDEN = ("stages", "ablation")


class ConfigReads:
    """A config model seen through attribute reads, each leaf read recorded as ``dotted.path: value``."""

    __slots__ = ("_model", "_path", "_reads")

    def __init__(self, model: BaseModel, path: str = "", reads: dict[str, Any] | None = None):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_reads", {} if reads is None else reads)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("model_"):
            raise TypeError(f"config field reads go through attributes or model_dump(), not {name}")
        value = getattr(self._model, name)
        path = f"{self._path}.{name}" if self._path else name
        top = path.split(".")[0]
        if top in FORBIDDEN:
            raise TypeError(f"a stage may not read config field {path!r} (its round would depend on other stages)")
        if callable(value) and not isinstance(value, BaseModel):
            raise TypeError(f"config field {path!r} is a method; stages read values")
        if isinstance(value, BaseModel):
            return ConfigReads(value, path, self._reads)
        self._record(path, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("the config is read-only")

    def __repr__(self) -> str:
        return f"ConfigReads({self._path or 'config'}: {self._model!r})"

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """The whole section, recorded as read."""
        if not self._path:
            raise TypeError("a stage reads config sections, not the whole config")
        self._record(self._path, self._model)
        return self._model.model_dump(**kwargs)

    def _record(self, path: str, value: Any) -> None:
        if path and path.split(".")[0] not in UNRECORDED:
            self._reads[path] = to_jsonable_python(value)

    def reads(self) -> dict[str, Any]:
        """``{dotted path: value}`` of every field read, sorted; a field inside a section read whole is
        left to the section."""
        paths = sorted(self._reads)
        whole = [p for p in paths if any(q.startswith(p + ".") for q in paths)]
        return {p: self._reads[p] for p in paths if not any(p.startswith(w + ".") for w in whole)}


def current_slice(cfg: BaseModel, paths: list[str]) -> dict[str, Any] | None:
    """``{path: value}`` of ``paths`` in ``cfg`` (the current config), or None when a path no longer exists."""
    out = {}
    for path in paths:
        node: Any = cfg
        for part in path.split("."):
            if not isinstance(node, BaseModel) or part not in type(node).model_fields:
                return None
            node = getattr(node, part)
        out[path] = to_jsonable_python(node)
    return out
