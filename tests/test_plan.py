"""`bihmf plan`: job counts equal the Snakemake DAG's, residues from a real protein table or the
published sizes, calibration by the real training epoch, the CSV and the command."""

from __future__ import annotations

import copy
import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bihmf import plan, plan_timing
from bihmf.benchmark import Benchmark, validate_config
from bihmf.cli import main
from bihmf.data.schema import write_proteins
from bihmf.models.model import run_combinations
from bihmf.plan_calibration import SHIPPED, read_calibration

ROOT = Path(__file__).resolve().parents[1]
SCANNET = ROOT / "tests" / "data" / "scannet"
CPU = torch.device("cpu")


def _benchmark(path: Path, **model: list[str]) -> Benchmark:
    written = yaml.safe_load(path.read_text())
    written["model"] = {**written.get("model", {}), **model}
    if model:  # the config's ablations may name fusions the override drops
        written["ablations"] = []
    return Benchmark(validate_config(copy.deepcopy(written)), written)


def _dry_run_counts(workdir: Path, targets: list[str]) -> dict[str, int]:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *targets,
               "--cores", "1", "--dry-run", "--quiet", "rules", "--configfile", str(ROOT / "config" / "demo.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return {p[0]: int(p[1]) for p in (line.split() for line in done.stdout.splitlines()) if len(p) == 2 and p[1].isdigit()}


@pytest.fixture(scope="module")
def records(single_thread):
    return plan.demo_records(ROOT)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, records) -> Path:
    """A workflow folder where only ppbs_demo is preprocessed (its real protein table)."""
    root = tmp_path_factory.mktemp("plan_root")
    write_proteins(records, root / plan.PROTEINS.format(dataset="ppbs_demo"))
    return root


def test_stage_jobs_equal_the_demo_dag(tmp_path):
    """One dry run of `all` and `plan`: every stage's count, and the plan job once beside them."""
    benchmark = _benchmark(ROOT / "config" / "demo.yaml")
    counts = _dry_run_counts(tmp_path, ["all", "plan"])
    assert counts.pop("plan") == 1 and counts.pop("all") == 1
    jobs = plan.stage_jobs(benchmark)
    assert jobs == {k: v for k, v in counts.items() if k != "total"}
    assert counts["total"] == sum(jobs.values()) + 2


def test_full_config_falls_back_to_published_sizes(tmp_path):
    config = _benchmark(ROOT / "config.yaml").config
    sizes = {d: plan.dataset_size(d, spec, tmp_path, {}) for d, spec in config["datasets"].items()}
    assert None not in sizes.values()
    react = config["datasets"]["react"]["published_sizes"]
    assert sizes["react"].graph_residues["train"] == pytest.approx(react["train"] * plan.CHAIN_LENGTH["react"].value)
    assert "assumed" in sizes["react"].source
    # LBA graphs are pockets; the cache holds the full chains
    lba = sum(config["datasets"]["lba30"]["published_sizes"].values())
    assert sizes["lba30"].graph_residues["val"] == pytest.approx(466 * plan.POCKET_RESIDUES.value)
    assert sizes["lba30"].cache_residues == pytest.approx(lba * plan.CHAIN_LENGTH["lba"].value)
    # PSR decoys share their target's chain: the cache stores it once
    psr = sum(config["datasets"]["psr"]["published_sizes"].values())
    assert sizes["psr"].cache_residues == pytest.approx(psr * plan.CHAIN_LENGTH["psr"].value / plan.CHAIN_COPIES["psr"].value)
    # splits config.yaml does not declare come from the docs, and say so
    assert sizes["ppbs"].proteins["train"] == 12_700 and "docs/datasets.md" in sizes["ppbs"].source
    assert set(sizes["lba60"].proteins) == {"train", "val", "test"}
    given = plan.dataset_size("react", config["datasets"]["react"], tmp_path, {"react": 100.0})
    assert given.graph_residues["train"] == react["train"] * 100.0 and "--mean-length" in given.source


def test_measured_lengths_match_the_real_scannet_files():
    headers = residues = 0
    for path in (SCANNET / "PPBS").glob("labels_validation_*.txt"):
        lines = path.read_text().splitlines()
        headers += sum(line.startswith(">") for line in lines)
        residues += sum(bool(line) and not line.startswith(">") for line in lines)
    assert headers == 3216 and round(residues / headers, 1) == plan.CHAIN_LENGTH["ppbs"].value
    with (SCANNET / "BCE" / "table.csv").open(newline="") as handle:
        lengths = [int(row["Length"]) for row in csv.DictReader(handle)]
    assert len(lengths) == 3756 and round(float(np.mean(lengths)), 1) == plan.CHAIN_LENGTH["bce"].value


def test_residues_from_a_real_protein_table(demo_root, records, lba_records, tmp_path):
    size = plan.dataset_size("ppbs_demo", {"graph_residues": "all", "kind": "ppbs"}, demo_root, {})
    for split in ("train", "val", "test"):
        chosen = [r for r in records if r.split == split]
        assert size.proteins[split] == len(chosen)
        assert size.graph_residues[split] == sum(len(r.sequence) for r in chosen)
    assert size.source.startswith("table:")
    write_proteins(lba_records, tmp_path / "lba.parquet")
    pocket = plan.size_from_table(tmp_path / "lba.parquet", "pocket")
    assert sum(pocket.graph_residues.values()) == sum(int((r.labels == 1).sum()) for r in lba_records)
    # the 6msm complexes share their chains: the cache counts each chain once
    assert pocket.cache_residues < sum(len(r.sequence) for r in lba_records)


def test_plan_calibrates_two_combinations_and_writes_the_csv(demo_root, records, tmp_path, monkeypatch):
    benchmark = _benchmark(ROOT / "config" / "demo.yaml", encoders=["gvp"], fusions=["struct_only", "seq_only"])
    config = benchmark.config
    chosen = plan.calibration_records(records, 300)
    first, saved = plan.combinations(benchmark, 16), []
    calibration = plan_timing.measure(benchmark, first, CPU, chosen, plan_timing.new_calibration(CPU, 1, chosen, 16), saved.append)
    assert len(calibration.training) == 2 and calibration.device == "cpu" and calibration.step_residues == sum(len(r.sequence) for r in chosen)
    # saved after each measurement; a calibration cut short resumes without timing again what it holds
    assert [len(c.training) for c in saved] == [1, 2, 2] and saved[-1] == calibration
    resumed = plan_timing.measure(benchmark, first, CPU, chosen, saved[0], saved.append)
    assert resumed.training.keys() == calibration.training.keys() and len(saved) == 5  # the second combination, the embed
    assert resumed.training[next(iter(first))] == calibration.training[next(iter(first))]
    monkeypatch.setattr(plan_timing, "calibrate", _no_timing)
    monkeypatch.setattr(plan_timing, "calibrate_embed", _no_timing)
    assert plan_timing.measure(benchmark, first, CPU, chosen, calibration, saved.append) == calibration and len(saved) == 5
    with pytest.raises(plan.CalibrationError, match="measured with other settings: width 16 \\(now 8\\)"):
        plan.resumed(calibration, plan_timing.new_calibration(CPU, 1, chosen, 8))
    result = plan.make_plan(benchmark, demo_root, calibration, width=16)
    assert len(result.rows) == 2 * len(config["datasets"])
    assert all(row.s_per_residue > 0 for row in result.rows)
    counted = [row for row in result.rows if row.hours is not None]
    assert {row.dataset for row in counted} == {"ppbs_demo"} and set(result.unknown) == set(config["datasets"]) - {"ppbs_demo"}
    row = counted[0]
    assert row.hours == pytest.approx(row.s_per_residue * (row.train_residues + row.val_residues) * row.epochs * row.jobs / 3600)
    assert result.hours == pytest.approx(sum(r.hours for r in counted))
    esm = config["esm"]["name"]
    layers, width = len(result.esm_layers[("ppbs_demo", esm)]), plan.esm_width(config["esm"])
    size = plan.dataset_size("ppbs_demo", config["datasets"]["ppbs_demo"], demo_root, {})
    assert result.cache_gb == row.esm_cache_gb == plan.cache_bytes(size, layers, width) / 1e9
    assert row.esm_cache_gb >= size.cache_residues * layers * width * 2 / 1e9 > 0
    assert row.embed_hours == pytest.approx(calibration.embed[esm].s_per_residue * size.cache_residues / 3600) and row.embed_hours > 0
    assert calibration.embed[esm].note.startswith("timed")  # the demo's random-init ESM is timed itself
    path = plan.write_plan(result, tmp_path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == plan.COLUMNS and len(rows) == len(result.rows)
    assert math.isclose(sum(float(r["hours"]) for r in rows if r["hours"]), result.hours, rel_tol=1e-4)
    table = plan.plan_table(result)
    assert f"train {result.stage_jobs['train']}" in table and "Not counted" in table


def _plan_args(configfile: Path, root: Path, out: Path) -> list[str]:
    return ["plan", "--configfile", str(configfile), "--root", str(root), "--device", "cpu", "--width", "16",
            "--calibrate-steps", "1", "--calibrate-residues", "300", "--out", str(out), "--workflow", str(ROOT)]


def _csv_rows(out: Path) -> list[dict[str, str]]:
    with (out / plan.PLAN_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_busy_cpu_is_named_before_it_inflates_the_calibration(monkeypatch):
    monkeypatch.setattr(plan_timing.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(plan_timing.os, "getloadavg", lambda: (14.0, 12.0, 10.0))
    assert "1-min load average 14.0 on 2 cores" in plan_timing.busy_cpu(2)
    monkeypatch.setattr(plan_timing.os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert plan_timing.busy_cpu(1) is None
    assert "OMP_NUM_THREADS" in plan_timing.busy_cpu(2)


def test_cli_plan_on_the_demo_config(demo_root, records, tmp_path, monkeypatch, capsys):
    """The whole demo config: every fusion of its encoder, ppbs_demo counted from its table."""
    monkeypatch.setattr(plan, "demo_records", lambda workflow: records)  # parsed once for the module
    benchmark = _benchmark(ROOT / "config" / "demo.yaml")
    config = benchmark.config
    out, saved = tmp_path / "plan", tmp_path / "calibration.json"
    assert main([*_plan_args(ROOT / "config" / "demo.yaml", demo_root, out), "--save-calibration", str(saved)]) == 0
    chosen = [r.sequence for r in plan.calibration_records(records, 300)]
    printed = capsys.readouterr().out
    jobs = plan.stage_jobs(benchmark)
    assert f"(total {sum(jobs.values())})" in printed and "Total:" in printed and "steps of " in printed
    rows = _csv_rows(out)
    pairs = run_combinations(config["model"]["encoders"], config["model"]["fusions"])
    main_rows = [r for r in rows if r["variant"] == plan.MAIN_VARIANT]
    assert [(r["dataset"], r["encoder"], r["fusion"]) for r in main_rows] == [(d, e, f) for d in config["datasets"] for e, f in pairs]
    # the demo's two ablations: one row per variant, each reading its own ESM model's cache
    variants = {r["variant"]: r for r in rows if r["variant"] != plan.MAIN_VARIANT}
    assert {v: (r["dataset"], r["encoder"], r["fusion"], r["esm"], r["jobs"]) for v, r in variants.items()} == {
        "esm_size/t12": ("ppbs_demo", "gvp", "bihmf_local", "esm2_t12_demo_random", "1"),
        "direction/one_way": ("ppbs_demo", "gvp", "bihmf_local", config["esm"]["name"], "1"),
    }
    main_cache = next(r for r in main_rows if r["dataset"] == "ppbs_demo")["esm_cache_gb"]
    assert variants["direction/one_way"]["esm_cache_gb"] == main_cache
    assert float(variants["esm_size/t12"]["esm_cache_gb"]) > float(main_cache)  # wider model, more layers
    assert {(r["device"], r["width"], r["step_residues"]) for r in rows} == {("cpu", "16", str(sum(map(len, chosen))))}
    assert all(float(r["hours"]) > 0 for r in rows if r["dataset"] == "ppbs_demo")
    assert all(r["hours"] == "" for r in rows if r["dataset"] != "ppbs_demo")
    # the saved file prices the same plan on any machine, timing nothing
    monkeypatch.setattr(plan, "measure", _no_timing)
    again = tmp_path / "again"
    assert main(["plan", "--configfile", str(ROOT / "config" / "demo.yaml"), "--root", str(demo_root), "--width", "16",
                 "--calibration", str(saved), "--out", str(again)]) == 0
    assert [_without_source(r) for r in _csv_rows(again)] == [_without_source(r) for r in rows]
    assert {r["calibration"] for r in _csv_rows(again)} == {str(saved)} and "Not in the calibration" not in capsys.readouterr().out
    # asked at another width, the file lacks every combination and says which and why
    assert main(["plan", "--configfile", str(ROOT / "config" / "demo.yaml"), "--root", str(demo_root),
                 "--calibration", str(saved), "--out", str(again)]) == 0
    printed = capsys.readouterr().out
    assert f"Not in the calibration {saved} ({len(plan.combinations(benchmark, None))};" in printed
    assert "gvp/bihmf_global on esm2_t6_demo_random: measured with other settings: hidden_dim 32 (file: 16)" in printed
    assert all(r["hours"] == "" and r["s_per_residue"] == "" for r in _csv_rows(again))


def _no_timing(*args, **kwargs):
    raise AssertionError("a plan from a calibration file timed something")


def _without_source(row: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key != "calibration"}


def test_plan_without_flags_uses_the_shipped_calibration(tmp_path, monkeypatch, capsys):
    """No GPU and no flags: the shipped calibration prices config.yaml and the reviewer tier with
    nothing timed, lists what it lacks, and the plan says how to calibrate your own."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plan, "measure", _no_timing)
    shipped = max((read_calibration(p) for p in SHIPPED.glob("*.json")), key=lambda c: c.date)
    for configfile in (ROOT / "config.yaml", ROOT / "config" / "reviewer.yaml"):
        out = tmp_path / configfile.stem
        assert main(["plan", "--configfile", str(configfile), "--root", str(tmp_path / "fresh"), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"Projected {shipped.hours_unit} (calibration: {shipped.source}," in printed and plan.CALIBRATE_YOURS in printed
        lacking = [c for c in plan.combinations(Benchmark.load(configfile), None) if c not in shipped.training]
        listed = [line for line in printed.splitlines() if line.startswith("  ")]
        assert len(listed) == len(lacking) and all(line.startswith(f"  {c.label}: ") for line, c in zip(listed, lacking))
        rows = _csv_rows(out)
        assert rows and {r["calibration"] for r in rows} == {shipped.source}
        assert sum(r["hours"] == "" for r in rows) == sum(plan.run_combination(r, None) in lacking for r in plan.training_runs(Benchmark.load(configfile)))
    assert not lacking  # the reviewer tier, priced in the README, is complete


def test_bad_calibration_files_are_named(tmp_path, caplog, capsys):
    out = tmp_path / "plan"
    args = ["plan", "--configfile", str(ROOT / "config" / "demo.yaml"), "--root", str(tmp_path), "--out", str(out), "--calibration"]
    broken, shapeless, foreign = tmp_path / "broken.json", tmp_path / "shapeless.json", tmp_path / "foreign.json"
    broken.write_text("{not json")
    shapeless.write_text('{"format": "bihmf-calibration/1", "device": "cpu"}')
    foreign.write_text('{"format": "something-else"}')
    for path, reason in ((tmp_path / "missing.json", "cannot read it"), (broken, "not valid JSON"),
                         (shapeless, "missing key"), (foreign, "format 'something-else'")):
        caplog.clear()
        assert main([*args, str(path)]) == 2
        assert f"calibration {path}: {reason}" in caplog.text
    assert main([*args, str(broken), "--device", "cpu"]) == 2 and "without --device" in caplog.text
    assert not out.exists()


def test_cli_plan_on_the_full_config_uses_published_sizes(records, tmp_path, monkeypatch, capsys):
    """config.yaml on a fresh folder (one encoder × fusion, to stay fast): every dataset counted."""
    monkeypatch.setattr(plan, "demo_records", lambda workflow: records)
    full = yaml.safe_load((ROOT / "config.yaml").read_text())
    full["model"] = {**full["model"], "encoders": ["gvp"], "fusions": ["bihmf_local"]}
    configfile = tmp_path / "full_one_pair.yaml"
    configfile.write_text(yaml.safe_dump(full, sort_keys=False))
    out = tmp_path / "plan"
    assert main(_plan_args(configfile, tmp_path / "fresh", out)) == 0
    printed = capsys.readouterr().out
    assert "Not counted" not in printed and "extrapolated" in printed
    rows = _csv_rows(out)
    assert [r["dataset"] for r in rows] == list(full["datasets"])
    assert all(float(r["hours"]) > 0 and float(r["esm_cache_gb"]) > 0 for r in rows)
    assert all(r["residue_source"].startswith("published_sizes") or "docs/datasets.md" in r["residue_source"] for r in rows)
    assert {r["jobs"] for r in rows} == {str(len(full["train"]["seeds"]))}


@pytest.mark.parametrize(("words", "error"), [
    (["react=x"], "expected DATASET=RESIDUES"), (["react=-3"], "positive"), (["rect=300"], "no dataset 'rect'"),
])
def test_mean_length_errors_name_the_word(words, error):
    assert plan.mean_lengths(["psr=120"], ["react", "psr"]) == {"psr": 120.0}
    with pytest.raises(ValueError, match=error):
        plan.mean_lengths(words, ["react", "psr"])


def test_cli_plan_refuses_bad_input_before_calibrating(tmp_path, caplog):
    out = tmp_path / "plan"
    assert main(_plan_args(tmp_path / "missing.yaml", tmp_path, out)) == 2
    assert "missing.yaml" in caplog.text
    assert main([*_plan_args(ROOT / "config" / "demo.yaml", tmp_path, out), "--mean-length", "react=300"]) == 2
    assert "no dataset 'react'" in caplog.text and not out.exists()


def test_released_esm_embed_time_is_extrapolated_by_parameters(records):
    full = _benchmark(ROOT / "config.yaml").config
    embed = plan_timing.calibrate_embed(full["esm"], plan.calibration_records(records, 300), CPU, ROOT)
    assert embed.s_per_residue > 0 and embed.note.startswith("extrapolated") and "esm2_t33_650M_UR50D" in embed.note


@pytest.mark.slow
def test_plan_runs_from_a_non_editable_install(tmp_path):
    """`bihmf plan --configfile config/demo.yaml` in a workflow folder, with the package installed
    as a wheel elsewhere: the calibration reads the workflow folder's demo, not files beside the
    installed package (which has no config/ or demo/ there), and the shipped calibration is
    found inside the installed package."""
    source, site, work = tmp_path / "source", tmp_path / "site", tmp_path / "work"
    shutil.copytree(ROOT / "bihmf", source / "bihmf", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(site), str(source)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (work / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "demo.yaml", work / "config" / "demo.yaml")
    (work / "demo").mkdir()
    shutil.copy(ROOT / "demo" / "ppbs_demo.tar.gz", work / "demo" / "ppbs_demo.tar.gz")
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, "-c", "import sys, bihmf.cli; print(bihmf.cli.__file__); sys.exit(bihmf.cli.main())",
           "plan", "--configfile", "config/demo.yaml", "--device", "cpu", "--width", "8", "--calibrate-steps", "1",
           "--calibrate-residues", "100", "--out", "plan"]
    done = subprocess.run(run, cwd=work, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith(str(site))  # the installed package ran, not this checkout
    assert len(_csv_rows(work / "plan")) == len(plan.training_runs(Benchmark.load(ROOT / "config" / "demo.yaml")))
    # without a GPU and without flags, the calibration shipped inside the installed package
    shipped = [sys.executable, "-m", "bihmf", "plan", "--configfile", "config/demo.yaml", "--out", "shipped"]
    done = subprocess.run(shipped, cwd=work, capture_output=True, text=True, env={**env, "CUDA_VISIBLE_DEVICES": ""}, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"(calibration: {site / 'bihmf' / 'calibration'}" in done.stdout
