"""The data catalog: every artifact by name, never a hand-built path.

The YAML in ``data_catalog/catalog.yml`` names each dataset with a path
template, format, layer and the stage that produces it. Stages ask the catalog
for ``catalog.path("splits")`` or ``catalog.load("splits")``. The root may be a
local folder or an fsspec URL (``s3://bucket/worldnet``); paths come back as
``UPath`` s either way (see :mod:`worldnet.storage`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from upath import UPath

from worldnet import defaults
from worldnet.io import write_with_atomic
from worldnet.storage import as_path, is_local, read_parquet

if TYPE_CHECKING:  # polars only for tabular artifacts; resolving a path needs none
    import polars as pl


def _default_catalog() -> Path:
    """``data_catalog/catalog.yml``, found as package data: from a source tree, an editable or a plain ``pip install .``."""
    from importlib.resources import files

    return Path(str(files("data_catalog").joinpath("catalog.yml")))


DEFAULT_CATALOG = _default_catalog()
DEFAULT_ROOT = Path(defaults.ROOT)


#: The table schemas a catalog entry's ``schema:`` may name; :meth:`Catalog.save` checks a table's columns against them.
TABLE_SCHEMAS: tuple[str, ...] = ("manifest", "rejects")


def table_schema(name: str | None) -> dict[str, Any] | None:
    """The columns of the table schema ``name`` (one of :data:`TABLE_SCHEMAS`), or None for a table without one.

    Imported here, not at the top: the schemas are polars types, and the answer path (predict, serve) reads the
    catalog without polars.
    """
    if name not in TABLE_SCHEMAS:
        return None
    from worldnet.data.schema import MANIFEST_SCHEMA, REJECTS_SCHEMA

    schemas: dict[str, dict[str, Any]] = {"manifest": MANIFEST_SCHEMA, "rejects": REJECTS_SCHEMA}
    return schemas[name]


@lru_cache(maxsize=8)
def _read_catalog(path: str) -> dict[str, dict[str, Any]]:
    """Parse a catalog YAML once per process (stages resolve paths many times)."""
    with open(path) as fh:
        entries: dict[str, dict[str, Any]] = yaml.safe_load(fh)
    return entries


class MissingArtifactError(FileNotFoundError):
    """An artifact a stage needs is not there yet."""


@dataclass
class Catalog:
    """Resolves artifact names to paths under ``root`` and loads/saves tabular ones."""

    root: UPath = field(default_factory=lambda: as_path(DEFAULT_ROOT))
    params: dict[str, str] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_yaml(
        cls, root: str | os.PathLike[str] | UPath = DEFAULT_ROOT, path: str | os.PathLike[str] = DEFAULT_CATALOG, **params: str
    ) -> Catalog:
        entries = copy.deepcopy(_read_catalog(str(Path(path).resolve())))
        r = as_path(root)
        r = as_path(Path(r.path).resolve()) if is_local(r) else r
        return cls(r, {k: str(v) for k, v in params.items()}, entries)

    @property
    def local(self) -> bool:
        """Whether the root is on this machine's filesystem."""
        return is_local(self.root)

    def entry(self, name: str) -> dict[str, Any]:
        if name not in self.entries:
            raise KeyError(f"{name!r} is not in the data catalog; known: {', '.join(sorted(self.entries))}")
        return self.entries[name]

    def path(self, name: str, **kw: str) -> UPath:
        """The resolved path of ``name`` (``kw`` fills templates like ``{protocol}``)."""
        values = {"root": str(self.root).rstrip("/"), **self.params, **kw}
        try:
            return as_path(self.entry(name)["path"].format(**values))
        except KeyError as exc:
            raise KeyError(f"catalog entry {name!r} needs parameter {exc} (pass it as a keyword)") from exc

    def exists(self, name: str, **kw: str) -> bool:
        p = self.path(name, **kw)
        return p.is_dir() and any(p.iterdir()) if p.suffix == "" else p.is_file()

    def require(self, name: str, **kw: str) -> UPath:
        """The path of ``name``, or an error naming the stage that produces it."""
        if not self.exists(name, **kw):
            stage = self.entry(name).get("produced_by", "?")
            raise MissingArtifactError(
                f"artifact {name!r} is missing at {self.path(name, **kw)}: run the {stage!r} stage first "
                f"(run it alone with only={stage}, or from it with from_stage={stage})"
            )
        return self.path(name, **kw)

    def _table(self, name: str) -> dict[str, Any]:
        entry = self.entry(name)
        if entry.get("format") != "parquet":
            raise ValueError(
                f"catalog entry {name!r} is stored as {entry.get('format')!r}, not a parquet table: "
                f"load() and save() handle tables; read and write it through path({name!r})"
            )
        return entry

    def load(self, name: str, **kw: str) -> pl.DataFrame:
        """Load a table artifact (an entry of ``format: parquet``)."""
        self._table(name)
        return read_parquet(self.require(name, **kw))

    def save(self, name: str, df: pl.DataFrame, **kw: str) -> UPath:
        """Save a table artifact atomically, checked against the table schema its entry names (``schema:``)."""
        schema = table_schema(self._table(name).get("schema"))
        if schema is not None and (missing := [c for c in schema if c not in df.columns]):
            raise ValueError(f"a {name!r} table needs the columns of its schema; missing {missing}")
        p = self.path(name, **kw)
        write_with_atomic(p, lambda tmp: df.write_parquet(tmp))
        return p
