"""Every kind of bad input becomes exactly one reject row; good rows all survive."""

import os
import textwrap

import polars as pl
import pytest

from tests.resume import assert_kill_and_rerun_identical
from worldnet.data.debias import debias
from worldnet.data.ingest import StrictModeError, enforce_strict, ingest, read_flat
from worldnet.data.shards import ShardSpec, write_shards
from worldnet.data.split import make_splits
from worldnet.data.synthetic import SynthConfig, generate, image_name

CITIES = ["Madrid", "Bangkok", "Boston", "Melbourne"]


@pytest.fixture()
def broken_world(tmp_path):
    """A small synthetic world with one of each kind of bad input injected."""
    root = tmp_path / "world"
    generate(SynthConfig(out=root, cities=CITIES, per_city=12, size=(48, 36), seed=1), progress=False)
    csv = root / "Dataframes" / "Madrid.csv"
    lines = csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    fields = [r.split(",") for r in rows]
    expected: dict[str, str] = {}
    img_dir = root / "Images" / "Madrid"

    def name(f):
        return image_name("Madrid", dict(zip(header.split(","), f, strict=True)))

    # 1 missing image file
    (img_dir / name(fields[0])).unlink()
    expected["missing_image"] = fields[0][0]
    # 2 zero-byte file
    (img_dir / name(fields[1])).write_bytes(b"")
    # 3 not an image
    (img_dir / name(fields[2])).write_bytes(b"hello, I am text")
    # 4 truncated JPEG (passes the header check, fails decoding in the shard stage)
    p = img_dir / name(fields[3])
    p.write_bytes(p.read_bytes()[:200])
    # 5 coordinates in the file name disagree with the CSV: change the CSV's lat
    bad = list(fields[4])
    bad[5] = str(round(float(bad[5]) + 0.01, 6))
    # 6 out-of-range latitude (file renamed to match, so only the coordinate is wrong)
    oor = list(fields[5])
    os.rename(img_dir / name(fields[5]), img_dir / name([*oor[:5], "95.0", *oor[6:]]))
    oor[5] = "95.0"
    # 7 date outside the plausible range (file renamed to match)
    old = list(fields[6])
    os.rename(img_dir / name(fields[6]), img_dir / name([old[0], "1970", *old[2:]]))
    old[1] = "1970"
    # 8 duplicate image id: repeat row 7
    dup = list(fields[7])
    new_rows = [",".join(f) for f in fields[:4]] + [",".join(bad), ",".join(oor), ",".join(old)] + [",".join(f) for f in fields[7:]]
    new_rows.append(",".join(dup))
    # 9 unparseable line
    new_rows.append("12,notayear,3,90,Madrid,40.4,-3.7")
    csv.write_text("\n".join([header, *new_rows]) + "\n")
    total_rows = sum(len((root / "Dataframes" / f"{c}.csv").read_text().splitlines()) - 1 for c in CITIES)
    return root, total_rows


def test_rejects_table_has_every_bad_row_and_reason(broken_world):
    root, total = broken_world
    manifest, rejects = ingest("gsv_cities", root)
    reasons = sorted(rejects["reason"].to_list())
    assert reasons == sorted(
        [
            "missing_image",
            "empty_file",
            "not_an_image",
            "filename_coords_mismatch",
            "coords_invalid",
            "date_out_of_range",
            "duplicate_image_id",
            "unparseable_row",
        ]
    )
    # which rows: every reject names its source file and line
    madrid_lines = len((root / "Dataframes" / "Madrid.csv").read_text().splitlines())
    assert rejects.filter(pl.col("reason") == "unparseable_row")["row"].item() == madrid_lines  # the last line
    assert rejects["source"].str.ends_with("Madrid.csv").all()
    # good rows are never lost: everything else survives, the truncated JPEG included (caught later)
    assert manifest.height == total - 8
    assert manifest["continent"].null_count() == 0


def test_truncated_jpeg_is_rejected_by_the_shard_stage_and_the_rest_reach_shards(broken_world, tmp_path):
    root, total = broken_world
    manifest, _ = ingest("gsv_cities", root)
    table = manifest.join(make_splits(manifest, n_unseen=1), on="image_id")
    res = write_shards(table, tmp_path / "shards", ShardSpec(shard_size=16, width=40, height=30), workers=1, progress=False)
    assert res.rejects["reason"].to_list() == ["corrupt_image"]
    assert int(res.index["rows"].sum()) == manifest.height - 1


def test_strict_fails_with_the_same_report(broken_world):
    _, rejects = ingest("gsv_cities", broken_world[0])
    with pytest.raises(StrictModeError, match="8 rows rejected"):
        enforce_strict(rejects)


def test_flat_layout_and_generic_csv(tmp_path):
    root = tmp_path / "w"
    generate(SynthConfig(out=root, cities=["Rome"], per_city=4, size=(32, 24)), progress=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (root / "Images" / "Rome").glob("*.jpg"):
        parts = p.stem.split("_")
        (flat / f"Rome_{parts[5]}_{parts[6]}.jpg").write_bytes(p.read_bytes())
    (flat / "garbage.jpg").write_bytes(b"x")
    m, r = read_flat(flat)
    assert m.height == 4 and r["reason"].to_list() == ["unparseable_row"]
    csv = tmp_path / "t.csv"
    first = sorted(flat.glob("Rome_*.jpg"))[0]
    csv.write_text(f"path,lat,lon,city\n{first},41.9,12.5,Rome\nbroken,row\n{first.name},91,0,Rome\n")
    m, r = ingest("csv", csv)
    assert m.height == 1
    assert sorted(r["reason"].to_list()) == ["coords_invalid", "unparseable_row"]


def test_debias_balances_continents_deterministically(tmp_path):
    root = tmp_path / "w"
    generate(SynthConfig(out=root, cities=CITIES, per_city=20, size=(32, 24)), progress=False)
    m, _ = ingest("gsv_cities", root)
    out, summary = debias(m, "balance_continents", max_share=0.4, seed=1)
    share = summary.after_continent["Europe"] / out.height
    assert summary.before_continent["Europe"] / m.height > 0.4 >= share - 0.01
    again, _ = debias(m, "balance_continents", max_share=0.4, seed=1)
    assert again.equals(out)
    capped, s2 = debias(m, "cap_per_city", cap=10)
    assert max(s2.after_city.values()) <= 10


def test_splits_keep_places_together_and_hold_out_cities(tmp_path):
    root = tmp_path / "w"
    generate(SynthConfig(out=root, cities=CITIES, per_city=20, size=(32, 24)), progress=False)
    m, _ = ingest("gsv_cities", root)
    s = make_splits(m, unseen_cities=["Boston"]).join(m.select("image_id", "city", "place_id"), on="image_id")
    per_place = s.group_by("city", "place_id").agg(pl.col("seen").n_unique())
    assert per_place["seen"].max() == 1
    assert set(s.filter(pl.col("city") == "Boston")["unseen"].unique()) == {"test"}
    assert "test" not in s.filter(pl.col("city") != "Boston")["unseen"].to_list()


def test_killed_shard_stage_resumes_to_identical_output(tmp_path):
    root = tmp_path / "w"
    generate(SynthConfig(out=root, cities=CITIES, per_city=16, size=(48, 36)), progress=False)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import polars as pl
        from pathlib import Path
        from worldnet.data.ingest import ingest
        from worldnet.data.split import make_splits
        import worldnet.data.shards as sh
        m, _ = ingest("gsv_cities", "{root}")
        t = m.join(make_splits(m, n_unseen=1), on="image_id")
        kill_after = int(sys.argv[2]) if len(sys.argv) > 2 else -1
        real = sh.write_shard
        count = [0]
        def wrapped(args):
            if count[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            count[0] += 1
            return real(args)
        sh.write_shard = wrapped
        sh.write_shards(t, Path(sys.argv[1]), sh.ShardSpec(shard_size=8, width=40, height=30), workers=1, progress=False)
        """
    )
    a = assert_kill_and_rerun_identical(script, tmp_path, kill_after=3, pattern="shard-*")
    assert len(a) >= 8


def test_missing_dataset_error_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_root="):
        ingest("gsv_cities", tmp_path)


@pytest.mark.real_data
def test_real_metadata_ingest_is_fast(shared_data):
    import time

    t = time.perf_counter()
    m, r = ingest("gsv_metadata", shared_data / "gsv_cities_metadata")
    out, _ = debias(m)
    elapsed = time.perf_counter() - t
    print(f"real metadata: {m.height} rows, {r.height} rejects, ingest+validate+debias {elapsed:.1f}s")
    assert m.height + r.height == 470_834
    assert "date_out_of_range" in r["reason"].to_list()
    assert elapsed < 10
