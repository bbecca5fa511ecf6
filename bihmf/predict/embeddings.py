"""ESM rows for the chains of new structures, exactly as the run's cache holds them: reused
from that cache by sequence hash, otherwise computed with the run's checkpoint and windows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bihmf.data.schema import ProteinRecord
from bihmf.io import recorded_sha256
from bihmf.esm import embed_sequences
from bihmf.esm_checkpoint import load_esm, regression_path
from bihmf.esm_cache import EmbedSettings, EmbeddingCache, chain_sequences
from bihmf.predict.options import InputError, PredictOptions, RunError
from bihmf.run import TrainedRun

log = logging.getLogger(__name__)

CHECKPOINT_DIR = ("resources", "esm")  # the workflow's checkpoint folder (rules/common.smk)
# cache metadata that changes the embedding values; new chains are embedded with the run's
CACHE_SETTINGS = ("embed_dim", "esm_depth", "window", "window_overlap")


def verified_checkpoint(run: TrainedRun, given: Path | None) -> Path | None:
    """The ESM checkpoint to embed new chains with, its sha256 checked against the run's.

    Without ``given``, the workflow's ``resources/esm/<name>`` is used when it exists; None when
    there is none (then only chains already in the cache can be predicted).
    """
    root = run.folder.workflow_root()
    path = given or (root.joinpath(*CHECKPOINT_DIR, run.esm["checkpoint"]) if root else None)
    if path is None or not path.exists():
        if given is not None:
            raise RunError(f"{given}: ESM checkpoint not found")
        return None
    if not regression_path(path).exists():
        raise RunError(f"{path}: fair-esm needs {regression_path(path).name} beside the checkpoint")
    digest = recorded_sha256(path)  # the esm_checkpoint rule's record, while size and mtime match
    if digest != run.provenance["esm_checkpoint_sha256"]:
        raise RunError(
            f"{path}: sha256 {digest} differs from the checkpoint the run was trained with "
            f"({run.esm['checkpoint']}, sha256 {run.provenance['esm_checkpoint_sha256']})"
        )
    return path


def open_run_cache(run: TrainedRun, given: Path | None) -> tuple[EmbeddingCache, list[int]] | None:
    """The embedding cache to reuse and the slots of the run's layers in it; None if there is none."""
    path = given or (run.path / run.esm["index"])
    if not path.exists():
        if given is not None:
            raise RunError(f"{given}: embedding cache index not found")
        log.info("%s: the run's embedding cache is not there; every chain is embedded anew", path)
        return None
    try:
        cache = EmbeddingCache(path, checkpoint_sha256=run.provenance["esm_checkpoint_sha256"], precision=run.esm.get("precision"))
    except ValueError as exc:
        raise RunError(str(exc)) from exc
    missing = [layer for layer in run.esm_layers if layer not in cache.layers]
    if missing:
        raise RunError(f"{path}: lacks ESM layer(s) {missing} that the run's model reads (cached: {cache.layers})")
    differing = [key for key in CACHE_SETTINGS if getattr(cache.info, key) != getattr(run.cache, key)]
    if differing:
        raise RunError(f"{path}: {differing} differ from the cache the run was trained on; its embeddings are not the run's")
    return cache, [cache.layers.index(layer) for layer in run.esm_layers]


class ChainEmbeddings:
    """ESM rows per chain, in the run's layer order: from the run's cache where the sequence hash
    is there, otherwise computed with the run's checkpoint (loaded on first need)."""

    def __init__(self, run: TrainedRun, options: PredictOptions, device: torch.device):
        self.run = run
        self.device = device
        self.token_budget = options.token_budget
        self.cache = open_run_cache(run, options.cache)
        self.checkpoint = verified_checkpoint(run, options.esm_checkpoint)
        self._esm: tuple[Any, Any] | None = None

    def proteins(self, records: list[ProteinRecord]) -> tuple[list[np.ndarray], int, int]:
        """Embeddings [N, layers, D] per record, plus how many distinct chains came from the cache / were computed."""
        chains = {key: seq for record in records for key, seq in chain_sequences(record.sequence, record.chain_ids)}
        found: dict[str, np.ndarray] = {}
        if self.cache is not None:
            cache, slots = self.cache
            found = {key: cache[key][:, slots] for key in chains if key in cache}
        missing = {key: seq for key, seq in chains.items() if key not in found}
        if missing:
            found.update(self._compute(missing))
        per_record = [
            np.concatenate([found[key] for key, _ in chain_sequences(record.sequence, record.chain_ids)]) for record in records
        ]
        return per_record, len(chains) - len(missing), len(missing)

    def _compute(self, sequences: dict[str, str]) -> dict[str, np.ndarray]:
        if self.checkpoint is None:
            raise InputError(
                f"{len(sequences)} chain(s) are not in the run's embedding cache and no ESM checkpoint is at hand "
                f"to embed them; pass --esm-checkpoint (sha256 {self.run.provenance['esm_checkpoint_sha256']})"
            )
        if self._esm is None:
            self._esm = load_esm(self.checkpoint)
        model, alphabet = self._esm
        try:
            settings = EmbedSettings.from_cache(self.run.esm, self.token_budget)
        except ValueError as exc:
            raise RunError(f"{self.run.path}: {exc}") from exc
        embedded = embed_sequences(model, alphabet, sequences, self.run.esm_layers, settings, device=self.device)
        return {key: values.astype(np.float32) for key, values in embedded.items()}
