"""The data catalog: its format drives what load and save accept, and a table's schema is checked on save."""

from __future__ import annotations

import polars as pl
import pytest

from worldnet.catalog import TABLE_SCHEMAS, Catalog
from worldnet.data.schema import REJECTS_SCHEMA, empty_rejects


def test_every_entry_says_how_it_is_stored_and_tables_name_known_schemas(tmp_path):
    cat = Catalog.from_yaml(tmp_path)
    for name, entry in cat.entries.items():
        assert entry.get("format"), name
        assert entry.get("schema") is None or entry["schema"] in TABLE_SCHEMAS, name
        assert "schema" not in entry or entry["format"] == "parquet", name


def test_a_table_is_checked_against_its_schema_on_save(tmp_path):
    cat = Catalog.from_yaml(tmp_path)
    cat.save("rejects", empty_rejects())
    assert cat.load("rejects").columns == list(REJECTS_SCHEMA)
    with pytest.raises(ValueError, match=r"missing \['source'"):
        cat.save("shard_rejects", pl.DataFrame({"image_id": ["a"]}))
    assert not cat.exists("shard_rejects")  # nothing written


def test_load_and_save_refuse_what_is_not_a_table(tmp_path):
    cat = Catalog.from_yaml(tmp_path)
    with pytest.raises(ValueError, match="not a parquet table"):
        cat.save("worldnet_model", pl.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="not a parquet table"):
        cat.load("image_shards")
