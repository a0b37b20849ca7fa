"""What is written from the stage declaration (:data:`tasks.config.PIPELINE`): prefect.yaml's stage deployments and
the README's stage table.

Both files keep a generated part between markers; everything outside the markers is written by hand.

    python -m flows.declared --write     # regenerate both after changing a stage's declaration
    python -m flows.declared             # exit 1 and say which file drifted (what the test suite checks)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.config import PIPELINE, Stage

REPO = Path(__file__).resolve().parents[1]
YAML_BEGIN = "  # >>> stage deployments, generated from tasks/config.py's PIPELINE: python -m flows.declared --write\n"
YAML_END = "  # <<< stage deployments\n"
README_BEGIN = "<!-- >>> stage table, generated from tasks/config.py's PIPELINE: python -m flows.declared --write -->\n"
README_END = "<!-- <<< stage table -->\n"


def deployment_yaml(stages: tuple[Stage, ...] = PIPELINE) -> str:
    """One Prefect deployment per stage, each running ``flows/pipeline.py:{name}_flow``."""
    blocks = [
        f"  - name: {s.name}\n"
        f"    description: Run only the `{s.name}` stage (worldnet run --only {s.name}).\n"
        f"    entrypoint: flows/pipeline.py:{s.name}_flow\n"
        "    tags: [worldnet, stage]\n"
        "    parameters: {}\n"
        "    work_pool: *pool\n"
        for s in stages
    ]
    return "".join(blocks)


def stage_table(stages: tuple[Stage, ...] = PIPELINE) -> str:
    """The README's table: each stage, the library function that does its work, and what it writes."""
    rows = ["| stage | library function | writes (catalog name) |\n", "|---|---|---|\n"]
    for s in stages:
        writes = s.writes or ", ".join(f"`{o}`" for o in s.outputs)
        rows.append(f"| {s.name} | {s.does} | {writes} |\n")
    return "".join(rows)


def _between(text: str, begin: str, end: str, body: str, name: str) -> str:
    if begin not in text or end not in text:
        raise ValueError(f"{name} lacks the markers of its generated part ({begin.strip()} ... {end.strip()})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + begin + body + end + tail


def rendered() -> dict[Path, str]:
    """Each generated file as the declaration says it should read."""
    yaml_path, readme_path = REPO / "prefect.yaml", REPO / "README.md"
    return {
        yaml_path: _between(yaml_path.read_text(), YAML_BEGIN, YAML_END, deployment_yaml(), "prefect.yaml"),
        readme_path: _between(readme_path.read_text(), README_BEGIN, README_END, stage_table(), "README.md"),
    }


def drifted() -> list[Path]:
    """The generated files that no longer read as the declaration says."""
    return [path for path, text in rendered().items() if path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the generated parts instead of checking them")
    args = ap.parse_args(argv)
    if args.write:
        for path, text in rendered().items():
            if path.read_text() != text:
                path.write_text(text)
                print(f"rewrote {path.relative_to(REPO)}")
        return 0
    stale = drifted()
    for path in stale:
        print(f"{path.relative_to(REPO)} differs from the stage declaration: run `python -m flows.declared --write`")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
