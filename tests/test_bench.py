"""The benchmark suite cannot rot: every benchmark runs at tiny sizes and the report is written.

Benchmarks are never timed tests: nothing here checks a speed or a ratio. The second test
guards what BENCHMARKS.md's long-protein section relies on: joint self-attention takes the
fused SDPA kernel on CPU, which never builds the [B, heads, 2N, 2N] score tensor.
"""

from __future__ import annotations

import importlib
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from bihmf.loader import place_rows
from bihmf.models.fusion.base import JointSelfAttention

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("embed_vs_extract", "cache_writer", "train_step", "data_path", "preprocess_throughput", "dag_build", "model_cost", "precision")


@pytest.fixture()
def suite(monkeypatch):
    """The suite's one command as a function. ``bench/`` sits beside the package, not in it, so
    the repository root goes on the path; torch's thread count is restored afterwards (quick
    runs use one thread)."""
    monkeypatch.syspath_prepend(str(ROOT))
    threads = torch.get_num_threads()
    yield importlib.import_module("bench.__main__").main
    torch.set_num_threads(threads)


def test_quick_suite_runs_every_benchmark_and_writes_the_report(suite, tmp_path):
    """Every benchmark but the rehearsal (minutes even at its quick size: its own slow test below),
    whose committed result renders beside the others."""
    report = tmp_path / "BENCHMARKS.md"
    shutil.copy(ROOT / "bench" / "results" / "rehearsal.json", tmp_path)
    shutil.copy(ROOT / "bench" / "results" / "download_rehearsal.json", tmp_path)
    suite(["--quick", "--devices", "cpu", "--only", ",".join(BENCHES), "--out", str(tmp_path), "--report", str(report)])
    text = report.read_text()
    assert "{{" not in text and "Not measured yet" not in text
    for name in BENCHES:
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["bench"] == name and result["machine"]["device"] == "cpu"
        assert f"-m bench.{name} --quick" in text  # each section names the command behind its figures


def test_joint_attention_takes_the_fused_kernel_on_cpu():
    attention = JointSelfAttention(16, 4)
    batch = torch.tensor([0] * 20 + [1] * 30)  # two proteins: the key-padding mask is in play
    seq = torch.randn(50, 16, requires_grad=True)
    with torch.profiler.profile() as profile:
        fused_seq, fused_struct = attention(seq, torch.randn(50, 16), batch, 2)
        (fused_seq.sum() + fused_struct.sum()).backward()
    names = {event.name for event in profile.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in names


def test_scannet_length_spread_is_the_real_label_files(monkeypatch):
    """The GPU comparison's named set: lengths of the real ScanNet chains kept under tests/data/scannet."""
    monkeypatch.syspath_prepend(str(ROOT))
    bench = importlib.import_module("bench.embed_vs_extract")
    pool = bench.scannet_chain_lengths()
    assert len(pool) == 3829 and sorted(pool)[len(pool) // 2] == 216 and sum(n > 1022 for n in pool) == 15
    drawn = bench.set_lengths(random.Random(0), 2000, "scannet")
    assert len(drawn) == 2000 and set(drawn) <= set(pool) and len(set(drawn)) > 300
    even = bench.set_lengths(random.Random(0), 16, "even")
    assert sorted(even) == [round(50 + i * 1450 / 15) for i in range(16)]


def test_kernel_count_takes_a_multi_tensor_operator_once_and_skips_views(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from bench.data_path import launches

    tensors = [torch.ones(3) for _ in range(5)]
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)  # a training test may have left it on: then empty tensors are filled
    try:
        with torch.profiler.profile() as profile:
            torch._foreach_mul_(tensors, 2.0)
            torch.ones(4).view(2, 2).t().exp()
    finally:
        torch.use_deterministic_algorithms(deterministic)
    counted = sum(launches(e) for e in profile.events() if e.cpu_parent is None)
    assert counted == 1 + 2  # the foreach call; ones' fill and exp (view and t launch nothing)


@pytest.mark.slow  # minutes on a busy 2-core machine: 6 child processes and 13 model builds
def test_rehearsal_quick_run_scales_its_figures_to_the_published_counts(monkeypatch, tmp_path):
    """The scale rehearsal alone, at its quick size: every stage runs and the full-count figures
    follow from the measured ones (what BENCHMARKS.md's section 7 shows)."""
    monkeypatch.syspath_prepend(str(ROOT))
    threads = torch.get_num_threads()
    rehearsal = importlib.import_module("bench.rehearsal")
    rehearsal.main(["--quick", "--out", str(tmp_path)])
    torch.set_num_threads(threads)
    result = json.loads((tmp_path / "rehearsal.json").read_text())
    bce = result["results"]["datasets"]["bce"]
    table = bce["stages"]["table"]
    assert table["proteins"] == sum(max(1, round(n * result["setup"]["fraction"])) for n in (990, 580, 760, 927, 499))
    full = bce["full"]
    assert full["scale"] == pytest.approx(3756 / table["proteins"])
    assert full["table_mb"] == pytest.approx(table["table_bytes"] * full["scale"] / 2**20)
    esm = result["setup"]["esm"]
    width, cache = esm["embed_dim"], esm["caches"]["bce"]
    assert 1 <= cache["read_layers"] <= len(cache["layers"])
    graph_residues = sum(s["graph_residues"] for s in table["splits"].values())
    assert full["job_layers_gb"] == pytest.approx(graph_residues * full["scale"] * cache["read_layers"] * width * 2 / 2**30)
    train = bce["stages"]["train"]  # the loader's choice at the reduced width is the configured width's
    assert train["rehearsal_mem_mb"] == train["mem_mb"] * result["setup"]["esm_width"] / width
    assert train["rows_mb"] == pytest.approx(graph_residues * train["read_layers"] * result["setup"]["esm_width"] * 2 / 2**20)
    assert train["rows"] == ("in memory" if train["rows_mb"] * width / result["setup"]["esm_width"] <= train["mem_mb"] / 2 else "streamed")
    assert set(bce["epoch_seconds"]) >= set(result["results"]["steps"]["timed"])
    assert f"| {full['rows']} |" in rehearsal.render(result) and ("| fits |" if full["fits"] else "| does not fit |") in rehearsal.render(result)


def test_rehearsal_reads_real_lengths_and_completes_untimed_pairs(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    synthetic = importlib.import_module("bench.synthetic")
    rehearsal = importlib.import_module("bench.rehearsal")
    sources = synthetic.length_sources()
    assert sum(map(sum, sources["bce_fold2"])) == 144_094  # residues of labels_fold2.txt, from BCE's table.csv lengths
    assert sum(map(sum, sources["ppbs_val_70"])) == 109_990 and len(sources["ppbs_val_70"]) == 414
    timed = {"gvp/struct_only": 3.0, "egnn/struct_only": 1.0, "egnn/cross": 1.5, "none/seq_only": 0.2}
    assert rehearsal.timed_combinations(["gvp", "egnn"], ["struct_only", "seq_only", "cross"], "egnn") == [
        ("gvp", "struct_only"), ("egnn", "struct_only"), ("none", "seq_only"), ("egnn", "cross"),
    ]
    estimated = rehearsal.step_seconds(timed, ["gvp", "egnn"], ["struct_only", "seq_only", "cross"], "egnn")
    assert estimated["gvp/cross"] == pytest.approx(3.5) and estimated["none/seq_only"] == 0.2


def test_rehearsal_widest_job_exchanges_the_measured_rows_for_its_own(monkeypatch):
    """The widest job's memory: the measured peak less the rows the measured job held, plus the
    widest job's rows in memory or one bounded store when it streams (counted once)."""
    monkeypatch.syspath_prepend(str(ROOT))
    rehearsal = importlib.import_module("bench.rehearsal")
    store = rehearsal.DECODED_BYTES / 2**20
    assert rehearsal.widest_job_mb(5000.0, "in memory", 100.0, 3000.0) == 7900.0
    assert rehearsal.widest_job_mb(5000.0, "in memory", 100.0, None) == 4900.0 + store
    assert rehearsal.widest_job_mb(5000.0, "streamed", 100.0, None) == 5000.0  # the measured peak holds the store
    assert rehearsal.widest_job_mb(5000.0, "none read", 0.0, None) == 5000.0 + store
    assert rehearsal.rehearsal_mem_mb(16000, 8, 1280) == 100.0
    esm = rehearsal.configured_esm()
    assert rehearsal.dataset_esm(esm, "psr")["layers"] == esm["caches"]["psr"]["layers"]
    with pytest.raises(KeyError, match="not_a_dataset"):
        rehearsal.dataset_esm(esm, "not_a_dataset")
    no_rows = {"table": {}, "parse": {}, "cache": {}, "train": asdict(place_rows(None, [], 1000))}  # a structure-only job's provenance
    with pytest.raises(ValueError, match="psr: the measured training job read no ESM layer"):
        rehearsal.derive("psr", no_rows, rehearsal.dataset_esm(esm, "psr"), 8)
