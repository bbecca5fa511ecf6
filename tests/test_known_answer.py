"""The known-answer dataset (real backbones, random sequences, planted bits) and the whole benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from bihmf.benchmark import validate_config
from bihmf.data import known_answer
from bihmf.data.structure import ATOM_NAMES, read_chains
from bihmf.known_answer import main as known_answer_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(demo_structures, tmp_path_factory):
    """The dataset built from two demo structures, unpacked, with its embeddings."""
    out = tmp_path_factory.mktemp("known_answer")
    structures = [demo_structures / "19hc.pdb1.gz", demo_structures / "1hvr.pdb1.gz"]
    archive, embeddings = known_answer.build(structures, out, known_answer.Planting(seed=3))
    with tarfile.open(archive) as tar:
        tar.extractall(out / "raw", filter="data")
    return out / "raw", embeddings, structures


def _records(raw: Path, task: str):
    config = validate_config({"datasets": {"d": {"kind": "known_answer", "task": "residue_binary", "download": {},
                                                 "paths": {"labels": f"known_answer/labels/{task}.json"}}}})
    records, reports = known_answer.parse(raw, config["datasets"]["d"])
    assert len(records) == len(reports) and all(r.status == "kept" for r in reports)
    return {r.protein_id: r for r in records}


def test_real_backbones_carry_random_sequences_and_geometric_g(built):
    raw, _, structures = built
    records = _records(raw, "g")
    entries = json.loads((raw / known_answer.PROTEINS_FILE).read_text())
    originals = {path.name: read_chains(path) for path in structures}
    ca = ATOM_NAMES.index("CA")
    for entry in entries:
        record, source = records[entry["protein_id"]], entry["source"]
        chain = originals[source["file"]][source["chain"]]
        piece = slice(source["start"], source["end"])
        assert np.allclose(record.coords[:, :4], chain.coords[piece, :4], atol=1e-3, equal_nan=True)
        assert record.sequence != chain.sequence[piece]
        counts = known_answer.neighbour_counts(record.coords[:, ca], 10.0)
        assert np.array_equal(record.labels, (counts > np.median(counts)).astype(np.int8))
    assert {e["split"] for e in entries} == {"train", "val", "test"}


def test_xor_and_the_protein_level_mix_follow_from_g_and_b(built):
    raw, _, _ = built
    g, b, xor = (_records(raw, task) for task in ("g", "b", "xor"))
    for protein_id, record in xor.items():
        assert np.array_equal(record.labels, g[protein_id].labels ^ b[protein_id].labels)
    config = validate_config({"datasets": {"d": {"kind": "known_answer", "task": "graph_regression", "download": {},
                                                 "paths": {"labels": "known_answer/labels/mix.json"}}}})
    mix, _ = known_answer.parse(raw, config["datasets"]["d"])
    targets = np.array([r.target for r in mix])
    mean_b = np.array([b[r.protein_id].labels.mean() for r in mix])
    assert np.isfinite(targets).all() and np.corrcoef(targets, mean_b)[0, 1] > 0.3
    assert all((r.labels == -1).all() for r in mix)


def test_each_bit_is_planted_in_its_layers_only(built):
    """Class-mean difference: about 2 x signal where the bit is planted, noise's size elsewhere."""
    raw, embeddings, _ = built
    planting = known_answer.Planting(seed=3)
    labels = {bit: _records(raw, bit) for bit in ("b", "b_early")}
    with h5py.File(embeddings, "r") as handle:
        arrays = {pid: handle[pid][()] for pid in handle}
    for bit, planted in planting.layers.items():
        bits = np.concatenate([labels[bit][pid].labels for pid in arrays])
        for layer in range(1, planting.n_layers + 1):
            rows = np.concatenate([arrays[pid][layer - 1] for pid in arrays])
            gap = np.linalg.norm(rows[bits == 1].mean(0) - rows[bits == 0].mean(0))
            noise = np.sqrt(planting.width * (1 / (bits == 1).sum() + 1 / (bits == 0).sum()))  # expected gap of pure noise
            if layer in planted:
                assert gap > 1.5 * planting.signal > 4 * noise, (bit, layer, gap)
            else:
                assert gap < 2 * noise, (bit, layer, gap)


def test_a_missing_label_is_named(built, tmp_path):
    raw, _, _ = built
    labels = json.loads((raw / "known_answer/labels/g.json").read_text())
    victim = sorted(labels)[0]
    del labels[victim]
    (tmp_path / "g.json").write_text(json.dumps(labels))
    spec = {"paths": {"labels": str(tmp_path / "g.json")}}
    with pytest.raises(ValueError, match=victim):
        known_answer.parse(raw, spec)


@pytest.mark.slow
def test_known_answer_benchmark_passes(tmp_path):
    """The make known-answer steps in a fresh folder: build, the workflow, the checker."""
    inputs = tmp_path / "inputs"
    assert known_answer_main(["build", "--out", str(inputs), str(ROOT / "demo" / "ppbs_demo.tar.gz")]) == 0
    config = yaml.safe_load((ROOT / "config" / "known_answer.yaml").read_text())
    for spec in config["datasets"].values():
        spec["download"]["archive"]["url"] = f"file://{inputs / 'known_answer.tar.gz'}"
    config["esm"]["precomputed"]["path"] = str(inputs / "embeddings.h5")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "all",
         "--cores", "2", "--configfile", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=1800,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert known_answer_main(["check", "--configfile", str(tmp_path / "config.yaml"), "--root", str(tmp_path),
                              "--out", str(tmp_path / "known_answer")]) == 0
    assert (tmp_path / "known_answer.png").stat().st_size > 0


@pytest.mark.parametrize("n", [5, 10, 30])
def test_the_mix_threshold_is_where_spearmans_one_sided_p_value_is_5_percent(n):
    """The mix's 'learns' bar against scipy: a Spearman correlation of exactly the threshold has
    one-sided p = 0.05 by scipy.stats.spearmanr's own (t-distribution) p-value."""
    from scipy import stats

    from bihmf.known_answer import spearman_significant

    r = spearman_significant(n)
    t = r * np.sqrt((n - 2) / (1 - r * r))
    assert stats.t.sf(t, n - 2) == pytest.approx(0.05, rel=1e-9)
    x = np.arange(n, dtype=float)
    rng = np.random.default_rng(n)
    y = x + rng.normal(scale=n, size=n)
    rho, p_two_sided = stats.spearmanr(x, y)
    assert (rho >= r) == (p_two_sided / 2 < 0.05 and rho > 0)
