"""Preprocessing throughput: structures/s and residues/s of each dataset parser on its fixture.

Run: .venv/bin/python bench/preprocess_throughput.py [--repeat 3]
Parses each demo/fixture archive's raw folder ``--repeat`` times in one process (the
preprocess rule is one process per dataset) and prints one line per dataset.
"""

from __future__ import annotations

import argparse
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from bihmf.config import load_config
from bihmf.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]


def unpack(url: str, out: Path) -> None:
    archive = ROOT / url.removeprefix("file:")
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(out)
    else:
        with tarfile.open(archive) as handle:
            handle.extractall(out, filter="data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = load_config(ROOT / "config" / "demo.yaml")
    print(f"{'dataset':<12} {'entries':>8} {'residues':>9} {'entries/s':>10} {'residues/s':>11}")
    for name, spec in config["datasets"].items():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp)
            unpack(spec["download"]["archive"]["url"], raw)
            start = time.perf_counter()
            for _ in range(args.repeat):
                records, _ = DATASETS[spec["kind"]].parse(raw, spec)
            seconds = time.perf_counter() - start
        residues = sum(len(r.sequence) for r in records) * args.repeat
        entries = len(records) * args.repeat
        print(f"{name:<12} {len(records):>8} {residues // args.repeat:>9} {entries / seconds:>10.1f} {residues / seconds:>11.0f}")


if __name__ == "__main__":
    main()
