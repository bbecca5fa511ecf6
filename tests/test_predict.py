"""`bihmf predict` with runs trained here on the demo data, on real structures and ligands.

One workflow-shaped folder per test module (results/runs/..., results/embeddings/...,
resources/esm/...) holds three small runs trained with the package's own training code: a
per-residue task (ppbs, bihmf_local), a protein classification without structure encoder
(react, seq_only under encoder ``none``) and a ligand-pocket regression (lba, serial).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from Bio.PDB import MMCIFParser, PDBParser

from bihmf.cli import USAGE_ERROR, main
from bihmf.data import preprocess_dataset
from bihmf.data.ligand import LigandError, read_ligand
from bihmf.data.schema import read_proteins, write_proteins
from bihmf.data.structure import load_structure, read_chains
from bihmf.esm_checkpoint import write_random_checkpoint
from bihmf.esm_cache import EmbedSettings, chain_sequences
from bihmf.esm_writer import embed_proteins
from bihmf.models.fusion import LayerChoice, cached_layers
from bihmf.predict import PredictOptions, RunError, predict
from bihmf.predict.embeddings import ChainEmbeddings
from bihmf.predict.structures import expand_inputs, output_names
from bihmf.predict.trained import build_trained_model, load_run
from bihmf.tasks import TASKS
from bihmf.batching import collate, protein_graph
from bihmf.run import RunSpec
from bihmf.training import train_run

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = "esm2_t4_predict_random.pt"
POCKET_CUTOFF = "6"  # Å, the LBA fixture's pocket definition (tests/fixtures/README_atom3d.md)
CPU = PredictOptions(device="cpu")


def _mda_data() -> Path:
    """MDAnalysisTests' data folder (a pinned requirement holding real PDB, SDF and MOL2 files)."""
    import importlib.util

    spec = importlib.util.find_spec("MDAnalysisTests")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _train(root: Path, dataset: str, spec: dict, proteins: Path, encoder: str, fusion: str, base_model: dict, base_train: dict) -> Path:
    """Embed a protein table with the workflow's layout and train one small run on it."""
    records = read_proteins(proteins)
    layers = cached_layers([fusion], LayerChoice(2, 4))
    index = root / "results/embeddings" / dataset / Path(CHECKPOINT).stem / "index.parquet"
    chains = [chain for r in records for chain in chain_sequences(r.sequence, r.chain_ids)]
    embed_proteins(root / "resources/esm" / CHECKPOINT, chains, layers, index, EmbedSettings(4096, 1022, 256), device=torch.device("cpu"))
    model = {**base_model, "hidden_dim": 16, "vector_dim": 4, "num_layers": 2, "knn": 8}
    train = {**base_train, "epochs": 2, "patience": 10, "threads": 1}
    run_spec = RunSpec(dataset, encoder, fusion, 0, spec["task"], {"num_classes": spec["num_classes"]}, spec["graph_residues"])
    out = root / "results/runs" / dataset / encoder / fusion / "seed0"
    train_run(run_spec, proteins, index, model, train, out)
    return out


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, demo_config, demo_raw, lba_records) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workflow")
    write_random_checkpoint(root / "resources/esm" / CHECKPOINT, num_layers=4, embed_dim=32, attention_heads=4, seed=0)
    datasets = demo_config["datasets"]
    args = (demo_config["model"], demo_config["train"])

    ppbs = root / "results/data/ppbs_demo/proteins.parquet"
    preprocess_dataset(demo_raw, datasets["ppbs_demo"], ppbs, ppbs.with_name("report.json"))
    react_raw = tmp_path_factory.mktemp("react_raw")
    with zipfile.ZipFile(ROOT / "tests/fixtures/react_fixture.zip") as archive:
        archive.extractall(react_raw)
    react = root / "results/data/react_demo/proteins.parquet"
    preprocess_dataset(react_raw, datasets["react_demo"], react, react.with_name("report.json"))
    lba = root / "results/data/lba_demo/proteins.parquet"
    write_proteins(lba_records, lba)
    return {
        "root": root,
        "ppbs": _train(root, "ppbs_demo", datasets["ppbs_demo"], ppbs, "gvp", "bihmf_local", *args),
        "react": _train(root, "react_demo", datasets["react_demo"], react, "none", "seq_only", *args),
        "lba": _train(root, "lba_demo", datasets["lba_demo"], lba, "gvp", "serial", *args),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, demo_structures) -> dict[str, Path]:
    """Real demo structures (gzip PDB, mmCIF, plain PDB) and bad files derived from them."""
    folder = tmp_path_factory.mktemp("inputs")
    plain = folder / "4e43.pdb"
    plain.write_bytes(gzip.decompress((demo_structures / "4e43.pdb1.gz").read_bytes()))
    lines = plain.read_text().splitlines(keepends=True)
    atoms = [line for line in lines if line.startswith("ATOM")]
    hetero = [line for line in gzip.decompress((demo_structures / "19hc.pdb1.gz").read_bytes()).decode().splitlines(keepends=True) if line.startswith("HETATM")]
    bad = {
        "not_a_structure.txt": "These are notes about my protein, not coordinates.\n",
        "hetero_only.pdb": "".join(hetero) + "END\n",
        "no_ca.pdb": "".join(line for line in atoms if line[12:16].strip() != "CA") + "END\n",
        "ca_only.pdb": "".join(line for line in atoms if line[12:16].strip() == "CA") + "END\n",
        "unknown_only.pdb": "".join(line[:17] + "UNK" + line[20:] for line in atoms if line[21] == "C") + "END\n",
    }
    for name, text in bad.items():
        (folder / name).write_text(text)
    return {
        "gz": demo_structures / "19hc.pdb1.gz",
        "cif": demo_structures / "3pwp-assembly1.cif.gz",
        "plain": plain,
        **{name.split(".")[0]: folder / name for name in bad},
    }


def _bfactors(path: Path) -> dict[tuple[str, int, str], list[float]]:
    parser = MMCIFParser(QUIET=True) if path.suffix == ".cif" else PDBParser(QUIET=True)
    out: dict[tuple[str, int, str], list[float]] = {}
    for residue in parser.get_structure("copy", str(path))[0].get_residues():
        key = (residue.get_parent().id, residue.id[1], residue.id[2].strip())
        out[key] = [atom.get_bfactor() for atom in residue.get_unpacked_list()]
    return out


def test_residue_scores_bfactor_copies_plots_and_per_file_errors(workflow, inputs, tmp_path):
    out = tmp_path / "out"
    good = [inputs["gz"], inputs["cif"], inputs["plain"]]
    bad = ["not_a_structure", "hetero_only", "no_ca", "ca_only", "unknown_only"]
    absent = tmp_path / "absent.pdb"
    status = main(["predict", "--run", str(workflow["ppbs"]), "--out", str(out), "--device", "cpu",
                   *map(str, [good[0], inputs["not_a_structure"], *good[1:], *(inputs[b] for b in bad[1:]), absent])])
    assert status == 1  # some files failed, the others were predicted
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["succeeded"], summary["failed"]) == (3, 6)
    assert summary["files"][-1]["error"] == f"{absent}: no such file"
    lines = {Path(line["file"]).name: line for line in summary["files"]}
    errors = {name.split(".")[0]: line["error"] for name, line in lines.items() if line["status"] == "failed" and name != absent.name}
    assert "not a PDB/mmCIF structure" in errors["not_a_structure"]
    assert "no protein chain (no amino-acid residue; only hetero groups or waters)" in errors["hetero_only"]
    assert "none with a CA atom (missing backbone atoms)" in errors["no_ca"]
    assert "missing backbone atoms: no residue of chain(s) ['A', 'B', 'C'] has N, CA and C" in errors["ca_only"]
    assert "only unknown residues (X)" in errors["unknown_only"]
    assert all(str(inputs[name]) in error for name, error in errors.items())

    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["file", "protein_id", "chain", "resnum", "icode", "residue", "score"]
    assert table["score"].between(0, 1).all() and table["score"].nunique() > 1
    for path in good:
        chains = read_chains(path)
        rows = table[table["file"] == str(path)]
        assert len(rows) == sum(len(c) for c in chains.values()) == lines[path.name]["residues"]
        assert "".join(rows["residue"]) == "".join(c.sequence for c in chains.values())

    for path, copy in ((inputs["gz"], "19hc.pdb"), (inputs["cif"], "3pwp-assembly1.cif"), (inputs["plain"], "4e43.pdb")):
        rows = table[table["file"] == str(path)]
        scores = {(r.chain, r.resnum, r.icode): r.score for r in rows.itertuples()}
        written = _bfactors(out / "structures" / copy)
        assert written.keys() == scores.keys()  # exactly the scored residues, waters and ligands left out
        original = {(r.get_parent().id, r.id[1], r.id[2].strip()): len(r.get_unpacked_list()) for r in load_structure(path)[0].get_residues()}
        for key, values in written.items():
            assert len(values) == original[key]  # one row per atom of the residue
            assert np.allclose(values, scores[key], atol=0.005)  # PDB keeps two decimals
        assert (out / "plots" / f"{copy.rsplit('.', 1)[0]}.png").read_bytes().startswith(b"\x89PNG")


def test_folders_expand_to_structure_files_with_distinct_output_names(tmp_path):
    for name in ("b/x.pdb", "a/x.pdb1.gz", "a/y.cif", "a/notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    files = expand_inputs([tmp_path / "b", tmp_path / "a", tmp_path / "missing.pdb"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["b/x.pdb", "a/x.pdb1.gz", "a/y.cif", "missing.pdb"]
    assert output_names(files) == ["x", "x-2", "y", "missing"]


def test_cached_and_recomputed_embeddings_give_the_same_scores(workflow, inputs, tmp_path):
    """Chains in the run's cache are read from it; elsewhere the checkpoint recomputes them identically."""
    cached = predict(workflow["ppbs"], [inputs["plain"]], tmp_path / "cached", CPU)["files"][0]
    moved = tmp_path / "moved_run"  # outside the workflow: neither the cache nor the checkpoint is found by default
    shutil.copytree(workflow["ppbs"], moved)
    stranded = predict(moved, [inputs["plain"]], tmp_path / "none", CPU)["files"][0]
    distinct = len({chain.sequence for chain in read_chains(inputs["plain"]).values()})  # 4e43: homodimer A/B + peptide C
    assert f"{distinct} chain(s) are not in the run's embedding cache and no ESM checkpoint is at hand" in stranded["error"]
    checkpoint = workflow["root"] / "resources/esm" / CHECKPOINT
    fresh = predict(moved, [inputs["plain"]], tmp_path / "fresh", PredictOptions(device="cpu", esm_checkpoint=checkpoint))["files"][0]
    assert cached["chains_from_cache"] >= 1  # the A/B sequence is a training chain
    assert (fresh["chains_from_cache"], fresh["chains_embedded"]) == (0, cached["chains_from_cache"] + cached["chains_embedded"]) == (0, distinct)
    first = pd.read_csv(tmp_path / "cached/predictions.csv")["score"]
    second = pd.read_csv(tmp_path / "fresh/predictions.csv")["score"]
    np.testing.assert_allclose(first, second, atol=1e-4)


def test_chain_selection_and_one_protein_per_chain(workflow, inputs, tmp_path):
    options = PredictOptions(device="cpu", chains=("B", "A"), per_chain=True, structures=False)
    summary = predict(workflow["ppbs"], [inputs["gz"], inputs["plain"]], tmp_path, options)
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert summary["succeeded"] == 2 and [f["proteins"] for f in summary["files"]] == [2, 2]
    assert list(dict.fromkeys(table["protein_id"])) == ["19hc_B", "19hc_A", "4e43_B", "4e43_A"]
    assert set(table.loc[table["protein_id"] == "4e43_B", "chain"]) == {"B"}
    missing = predict(workflow["ppbs"], [inputs["plain"]], tmp_path / "z", PredictOptions(device="cpu", chains=("Z",)))
    assert "chain(s) ['Z'] not found among its amino-acid chains ['A', 'B', 'C']" in missing["files"][0]["error"]


def _dna_complex(out: Path) -> Path:
    """173D (d(GAAGCTTC) duplex, chains A/B, with actinomycin D peptides C/D) as PDB, from MMTF."""
    import warnings

    from Bio.PDB import PDBIO
    from Bio.PDB.mmtf import MMTFParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = MMTFParser.get_structure(str(_mda_data() / "173D.mmtf"))
    writer = PDBIO()
    writer.set_structure(structure)
    writer.save(str(out))
    return out


def test_dna_lone_modified_residue_blank_chain_and_ca_less_residues_are_reported(workflow, inputs, demo_structures, tmp_path):
    dna = _dna_complex(tmp_path / "173d.pdb")
    hvr = gzip.decompress((demo_structures / "1hvr.pdb1.gz").read_bytes()).decode().splitlines(keepends=True)
    cso = tmp_path / "cso.pdb"  # 1HVR's S-hydroxycysteine A 67 alone: one residue, no polypeptide
    cso.write_text("".join(line for line in hvr if line.startswith("HETATM") and line[17:26] == "CSO A  67") + "END\n")
    blank = tmp_path / "blank.pdb"  # 4E43 chain A with a blank chain id, as modelled files have, and residue 10 without CA
    blank.write_text(
        "".join(
            line[:21] + " " + line[22:]
            for line in inputs["plain"].read_text().splitlines(keepends=True)
            if line.startswith("ATOM") and line[21] == "A" and not (line[22:26].strip() == "10" and line[12:16] == " CA ")
        )
        + "END\n"
    )
    options = PredictOptions(device="cpu", structures=False)
    summary = predict(workflow["ppbs"], [dna, cso, blank], tmp_path / "all", options)
    lines = {Path(f["file"]).name: f for f in summary["files"]}
    assert lines["173d.pdb"]["status"] == "ok"
    assert lines["173d.pdb"]["skipped_chains"] == {c: f"chain {c}: nucleic acid (8 nucleotides), not a protein chain" for c in "AB"}
    assert lines["173d.pdb"]["residues_without_ca"] == {"C": 1, "D": 1}  # the phenoxazone (PXZ) of each peptide
    assert lines["cso.pdb"]["status"] == "failed"
    assert "no protein chain: chain A: 1 amino-acid residue(s) with no peptide bond" in lines["cso.pdb"]["error"]
    assert lines["blank.pdb"]["status"] == "ok" and lines["blank.pdb"]["residues_without_ca"] == {"_": 1}
    table = pd.read_csv(tmp_path / "all" / "predictions.csv", keep_default_na=False)
    assert 10 not in table.loc[table["file"] == str(blank), "resnum"].tolist()

    chosen = predict(workflow["ppbs"], [dna, blank], tmp_path / "chosen", PredictOptions(device="cpu", structures=False, chains=("A", "_")))
    errors = [f["error"] for f in chosen["files"]]
    assert "chain(s) ['_'] not found" in errors[0] and "chain(s) ['A'] not found" not in errors[0]
    dna_only = predict(workflow["ppbs"], [dna], tmp_path / "dna", PredictOptions(device="cpu", structures=False, chains=("A",)))
    assert dna_only["files"][0]["error"] == f"{dna}: chain A: nucleic acid (8 nucleotides), not a protein chain"
    blank_only = predict(workflow["ppbs"], [blank], tmp_path / "blank", PredictOptions(device="cpu", structures=False, chains=("_",)))
    assert blank_only["files"][0]["status"] == "ok" and blank_only["files"][0]["residues"] == len(read_chains(blank)[" "])


def test_protein_classes_with_probabilities_through_python_m(workflow, inputs, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "bihmf", "predict", "--run", str(workflow["react"]), "--out", str(out), "--device", "cpu",
         "--per-chain", str(inputs["gz"]), str(inputs["cif"])],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "2 succeeded, 0 failed" in result.stdout
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == len(read_chains(inputs["gz"])) + len(read_chains(inputs["cif"]))
    probabilities = table[[f"p_{k}" for k in range(10)]].to_numpy()  # react_demo: num_classes 10
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5) and (probabilities >= 0).all()
    assert (table["predicted_class"] == probabilities.argmax(axis=1)).all()
    assert np.allclose(table["probability"], probabilities.max(axis=1))
    assert not (out / "structures").exists()  # per-protein task: no per-residue extras


@pytest.fixture(scope="module")
def xk2(tmp_path_factory) -> Path:
    """The inhibitor of HIV-1 protease 1hvr as its own PDB file (its HETATM records, as published)."""
    path = tmp_path_factory.mktemp("ligand") / "xk2.pdb"
    text = (_mda_data() / "1hvr.pdb").read_text()
    path.write_text("".join(line + "\n" for line in text.splitlines() if line.startswith("HETATM") and line[17:20] == "XK2"))
    return path


def test_ligand_pocket_prediction_equals_the_model_on_its_training_record(workflow, xk2, tmp_path):
    """1hvr + XK2 is an LBA fixture complex: predicting from the files rebuilds its training graph."""
    complex_file = _mda_data() / "1hvr.pdb"
    status = main(["predict", "--run", str(workflow["lba"]), "--out", str(tmp_path), "--device", "cpu",
                   "--ligand", str(xk2), "--pocket-cutoff", POCKET_CUTOFF, str(complex_file)])
    assert status == 0
    row = pd.read_csv(tmp_path / "predictions.csv").iloc[0]

    run = load_run(workflow["lba"])
    model = build_trained_model(run, torch.device("cpu"))
    record = next(r for r in read_proteins(workflow["root"] / "results/data/lba_demo/proteins.parquet") if r.protein_id == "1hvr")
    esm, _, _ = ChainEmbeddings(run, CPU, torch.device("cpu")).proteins([record])
    batch = collate([protein_graph(record, esm[0], "pocket")], torch.device("cpu"))
    with torch.no_grad():
        expected = TASKS["graph_regression"].outputs(model(batch), batch, model.head)[0]
    assert (row["residues"], row["graph_residues"], row["ligand_atoms"]) == (len(record.sequence), (record.labels == 1).sum(), len(record.ligand_elems))
    assert row["prediction"] == pytest.approx(expected, abs=1e-5)


def test_ligand_outside_the_structure_is_a_per_file_error(workflow, tmp_path):
    summary = predict(workflow["lba"], [_mda_data() / "1hvr.pdb"], tmp_path,
                      PredictOptions(device="cpu", ligands=(_mda_data() / "molecule.sdf",), pocket_cutoff=float(POCKET_CUTOFF)))
    assert summary["failed"] == 1
    assert "no residue of 1hvr lies within 6 Å of the ligand" in summary["files"][0]["error"]
    assert not (tmp_path / "predictions.csv").exists()


def test_run_mismatches_stop_before_any_file(workflow, inputs, tmp_path):
    files = [inputs["plain"]]
    other = tmp_path / "esm2_t4_other.pt"
    write_random_checkpoint(other, num_layers=4, embed_dim=32, attention_heads=4, seed=1)
    with pytest.raises(RunError, match="differs from the checkpoint the run was trained with"):
        predict(workflow["ppbs"], files, tmp_path / "a", PredictOptions(device="cpu", esm_checkpoint=other))

    short_cache = tmp_path / "cache" / "index.parquet"
    embed_proteins(workflow["root"] / "resources/esm" / CHECKPOINT, [("k", "MKV")], [4], short_cache,
                   EmbedSettings(64, 1022, 256), device=torch.device("cpu"))
    run_layers = json.loads(load_run(workflow["ppbs"]).esm["layers"])
    with pytest.raises(RunError, match=re.escape(f"lacks ESM layer(s) {[layer for layer in run_layers if layer != 4]}")):
        predict(workflow["ppbs"], files, tmp_path / "b", PredictOptions(device="cpu", cache=short_cache))
    half_cache = tmp_path / "half" / "index.parquet"  # the run's layers, at another esm.precision
    embed_proteins(workflow["root"] / "resources/esm" / CHECKPOINT, [("k", "MKV")], run_layers, half_cache,
                   EmbedSettings(64, 1022, 256, "float16"), device=torch.device("cpu"))
    with pytest.raises(RunError, match="computed at esm.precision float16, asked for float32"):
        predict(workflow["ppbs"], files, tmp_path / "h", PredictOptions(device="cpu", cache=half_cache))

    newer = tmp_path / "results/runs/ppbs_demo/gvp/bihmf_local/seed0"
    shutil.copytree(workflow["ppbs"], newer)
    metrics = json.loads((newer / "metrics.json").read_text())
    metrics["provenance"]["packages"]["bihmf"] = "9.9.0"
    (newer / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match=r"trained with bihmf 9\.9\.0"):
        predict(newer, files, tmp_path / "c", CPU)
    del metrics["provenance"]["esm_cache"]
    (newer / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match=r"provenance lacks \['esm_cache'\]"):
        predict(newer, files, tmp_path / "d", CPU)

    with pytest.raises(RunError, match="trained on protein-ligand complexes; give the ligand"):
        predict(workflow["lba"], files, tmp_path / "e", CPU)
    with pytest.raises(RunError, match="give --pocket-cutoff"):
        predict(workflow["lba"], files, tmp_path / "f", PredictOptions(device="cpu", ligands=(inputs["plain"],)))
    assert main(["predict", "--run", str(workflow["react"]), "--ligand", str(inputs["plain"]), "--out", str(tmp_path / "g"), str(inputs["plain"])]) == USAGE_ERROR
    assert not any((tmp_path / name).exists() for name in "abcdefgh")


def test_ligand_files_in_sdf_mol2_and_pdb(xk2, tmp_path):
    data = _mda_data()
    sdf = read_ligand(data / "molecule.sdf")
    declared = int((data / "molecule.sdf").read_text().splitlines()[3][:3])
    assert len(sdf.elements) + sdf.hydrogens == declared and sdf.hydrogens > 0
    assert set(sdf.elements) == {"C", "N", "O"} and sdf.xyz.shape == (len(sdf.elements), 3)

    lines = (data / "mol2/Molecules.mol2").read_text().splitlines()
    first_molecule_atoms = int(lines[lines.index("@<TRIPOS>MOLECULE") + 2].split()[0])
    mol2 = read_ligand(data / "mol2/Molecules.mol2")  # several molecules: the first is the ligand
    assert len(mol2.elements) + mol2.hydrogens == first_molecule_atoms
    assert all("." not in element for element in read_ligand(data / "mol2/Ligand.mol2").elements)  # C.ar -> C

    gz = tmp_path / "xk2.pdb.gz"
    gz.write_bytes(gzip.compress(xk2.read_bytes()))
    pdb = read_ligand(gz)
    assert len(pdb.elements) == sum(1 for line in xk2.read_text().splitlines() if line[76:78].strip() not in {"H", "D"})

    v3000 = tmp_path / "v3000.sdf"
    v3000.write_text("name\n  program\n\n  0  0  0     0  0            999 V3000\nM  END\n")
    for path, message in (
        (v3000, "V3000 molfile"),
        (data / "1hvr.pdb", "holds amino-acid residue"),
        (tmp_path / "ligand.xyz", "unknown ligand format '.xyz'"),
    ):
        with pytest.raises(LigandError, match=message):
            read_ligand(path)


def _dry_run(workdir: Path, *config: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
               "predict", "--dry-run", "--quiet", "rules", "--cores", "1", "--configfile", str(ROOT / "config/demo.yaml")]
    if config:
        command += ["--config", *config]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)


def test_snakemake_predict_target_trains_the_run_then_predicts(inputs, tmp_path):
    result = _dry_run(tmp_path, "predict_run=results/runs/ppbs_demo/gvp/bihmf_local/seed0",
                      f"predict_in=[{inputs['gz']},{inputs['plain'].parent}]", "predict_args=--per-chain")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    assert counts["predict"] == "1" and counts["train"] == "1" and counts["embed"] == "1"
    missing = _dry_run(tmp_path)
    assert missing.returncode != 0
    assert "target predict needs --config predict_run=<run folder> predict_in=" in missing.stdout + missing.stderr


def test_the_checkpoint_is_checked_by_its_recorded_digest_while_it_matches(workflow, monkeypatch):
    """`bihmf predict` trusts the esm_checkpoint rule's sha256 record instead of rehashing a
    multi-GB checkpoint per call, also after a touch (Snakemake touches every output of the rule)."""
    import bihmf.io
    from bihmf.io import digest_record, record_sha256
    from bihmf.predict.embeddings import verified_checkpoint

    run = load_run(workflow["ppbs"])
    checkpoint = workflow["root"] / "resources/esm" / CHECKPOINT
    times = checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns
    record_sha256(checkpoint)
    hashed: list[Path] = []
    real_digest = bihmf.io.file_digest
    monkeypatch.setattr(bihmf.io, "file_digest", lambda path, algorithm: hashed.append(path) or real_digest(path, algorithm))
    try:
        assert verified_checkpoint(run, None) == checkpoint and hashed == []
        os.utime(checkpoint, ns=(times[0], times[1] + 1))
        assert verified_checkpoint(run, None) == checkpoint and hashed == []
    finally:  # the workflow fixture is shared: leave its checkpoint as found
        digest_record(checkpoint).unlink()
        os.utime(checkpoint, ns=times)
