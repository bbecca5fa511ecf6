"""ESM-2 checkpoints: what is known of the released models before any download, providing a
checkpoint (released, configured URLs/paths, or a random-init one), and loading it.

Checkpoints use fair-esm's own local format and loader (``load_model_and_alphabet_local``),
so the offline random-init demo model and a downloaded ``esm2_t33_650M_UR50D.pt`` take the
same path. Loading stays ``weights_only``: only ``argparse.Namespace`` (the type fair-esm
stores its config in) is allow-listed.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from esm.data import Alphabet
from esm.model.esm2 import ESM2
from esm.pretrained import load_model_and_alphabet_local

from bihmf import lock
from bihmf.download import cache_entry, download_file, resolve_url
from bihmf.embeddings_import import source_depth
from bihmf.io import atomic_output, file_digest, record_sha256

__all__ = [
    "RELEASED_ESM2",
    "checkpoint_source",
    "esm_depth",
    "load_esm",
    "provide_checkpoint",
    "regression_path",
    "released_checkpoint",
    "write_random_checkpoint",
]

SAFE_CHECKPOINT_GLOBALS = [argparse.Namespace]


def regression_path(checkpoint: Path) -> Path:
    """fair-esm requires the contact-regression weights beside the checkpoint under this name."""
    return checkpoint.with_name(checkpoint.stem + "-contact-regression.pt")


def write_random_checkpoint(path: Path, num_layers: int, embed_dim: int, attention_heads: int, seed: int) -> None:
    """Write an untrained ESM-2 in fair-esm's checkpoint format (model + contact regression)."""
    if not path.stem.startswith("esm2"):
        raise ValueError(f"{path}: fair-esm only loads ESM-2 checkpoints whose file name starts with 'esm2'")
    torch.manual_seed(seed)
    model = ESM2(num_layers, embed_dim, attention_heads, Alphabet.from_architecture("ESM-1b"), token_dropout=True)
    state = model.state_dict()
    regression_keys = {k for k in state if k.startswith("contact_head.regression.")}
    cfg = argparse.Namespace(
        encoder_layers=num_layers,
        encoder_embed_dim=embed_dim,
        encoder_attention_heads=attention_heads,
        token_dropout=True,
    )
    body = {f"encoder.sentence_encoder.{k}": v for k, v in state.items() if k not in regression_keys}
    # sorted: a set's order, and so the pickled dict's, changes with each process's hash seed
    _save_reproducibly({"model": {k: state[k] for k in sorted(regression_keys)}}, regression_path(path))
    _save_reproducibly({"cfg": {"model": cfg}, "model": body}, path)


def _save_reproducibly(obj: object, path: Path) -> None:
    """``torch.save`` with the same bytes for the same tensors wherever it is written.

    Saved to a file, torch names the zip's top folder after the file, here atomic_output's random
    temporary name, so each write hashed differently and the checkpoint sha256 in every run's
    provenance changed from clone to clone. Saved to a buffer, the folder is always "archive".
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_esm(path: Path) -> tuple[ESM2, Alphabet]:
    """Load a local fair-esm checkpoint with weights-only unpickling."""
    if not path.exists() or not regression_path(path).exists():
        raise FileNotFoundError(f"ESM checkpoint needs both {path} and {regression_path(path)}")
    torch.serialization.add_safe_globals(SAFE_CHECKPOINT_GLOBALS)
    try:
        model, alphabet = load_model_and_alphabet_local(path)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        offending = found.group(1) if found else "an unsupported type"
        allowed = ", ".join(f"{t.__module__}.{t.__qualname__}" for t in SAFE_CHECKPOINT_GLOBALS)
        raise ValueError(
            f"{path}: checkpoint stores {offending}, which is outside the weights-only allow-list ({allowed}); "
            "refusing to unpickle it. Add the type to bihmf.esm_checkpoint.SAFE_CHECKPOINT_GLOBALS only if you trust the file."
        ) from exc
    return model.eval(), alphabet


def esm_depth(esm_cfg: dict) -> int:
    """Number of transformer layers, known before any download (cached layers depend on it)."""
    if "precomputed" in esm_cfg:  # read from the source's data (bihmf.embeddings_import)
        return source_depth(esm_cfg["precomputed"])
    if "random_init" in esm_cfg:
        return esm_cfg["random_init"]["num_layers"]
    match = re.match(r"esm2_t(\d+)_", esm_cfg["name"])
    if match is None:
        raise ValueError(f"esm.name {esm_cfg['name']!r}: cannot read the layer count (expected esm2_t<layers>_...)")
    return int(match.group(1))


@dataclass(frozen=True)
class ReleasedEsm2:
    """What is known of a released ESM-2 before any download."""

    width: int  # embedding width
    parameters: float  # the nominal count in its name (the plan scales embed time by it)


# fair-esm's released ESM-2 models (the depth is in the name: esm_depth)
RELEASED_ESM2 = {
    "esm2_t6_8M_UR50D": ReleasedEsm2(320, 8e6),
    "esm2_t12_35M_UR50D": ReleasedEsm2(480, 35e6),
    "esm2_t30_150M_UR50D": ReleasedEsm2(640, 150e6),
    "esm2_t33_650M_UR50D": ReleasedEsm2(1280, 650e6),
    "esm2_t36_3B_UR50D": ReleasedEsm2(2560, 3e9),
    "esm2_t48_15B_UR50D": ReleasedEsm2(5120, 15e9),
}
RELEASE_URL = "https://dl.fbaipublicfiles.com/fair-esm"


def released_checkpoint(name: str) -> dict:
    """fair-esm's published URLs for a released ESM-2 (it publishes no checksums for them)."""
    if name not in RELEASED_ESM2:
        raise ValueError(
            f"esm.name {name!r} is not a released ESM-2 ({', '.join(RELEASED_ESM2)}); "
            "give esm.checkpoint (URLs or file: paths) or esm.random_init"
        )
    return {
        "model": {"url": f"{RELEASE_URL}/models/{name}.pt", "checksum": None},
        "regression": {"url": f"{RELEASE_URL}/regression/{name}-contact-regression.pt", "checksum": None},
    }


# the ESM settings that decide which checkpoint file a model gets (provide_checkpoint reads no other)
CHECKPOINT_KEYS = ("name", "checkpoint", "random_init")


def checkpoint_source(esm_cfg: dict) -> dict:
    """The part of an ESM model's settings that decides its checkpoint: the checkpoint rule's
    params hold only this, so changing how the model is run (token budget, windows,
    ``esm.precision``, shards) re-runs the embed jobs but never fetches the model again."""
    return {key: esm_cfg[key] for key in CHECKPOINT_KEYS if key in esm_cfg}


def provide_checkpoint(esm_cfg: dict, model_out: Path, downloads: Path, base_dir: Path, lock_file: Path | None = None) -> None:
    """Put the checkpoint pair at ``model_out``: random-init, configured URLs/paths, or a
    released model by name (in that order of precedence; random_init with checkpoint is an error).

    A downloaded pair goes through the URL-keyed download cache and is recorded for
    ``bihmf lock``; with ``lock_file`` present, it must match the lock before it is published
    (fair-esm publishes no checksums: the lock is what keeps a later run on the same weights).
    Its sha256 is recorded beside it (``bihmf.io.record_sha256``), so the embed jobs
    read it instead of each hashing the checkpoint again."""
    if "checkpoint" in esm_cfg and "random_init" in esm_cfg:
        raise ValueError("esm: give either checkpoint (real weights) or random_init, not both")
    if "random_init" in esm_cfg:
        shape = esm_cfg["random_init"]
        write_random_checkpoint(model_out, shape["num_layers"], shape["embed_dim"], shape["attention_heads"], shape["seed"])
        record_sha256(model_out)
        return
    checkpoint = esm_cfg.get("checkpoint") or released_checkpoint(esm_cfg["name"])
    cached, seen = {}, {}
    for key, dest in (("model", model_out), ("regression", regression_path(model_out))):
        remote = checkpoint[key]
        url = resolve_url(remote["url"], base_dir)
        cached[dest] = download_file(url, cache_entry(downloads, url, Path(dest).name), remote["checksum"])
        seen[remote["url"]] = file_digest(cached[dest], "sha256")
    lock.record_seen(downloads, esm_cfg["name"], seen, lock.CHECKPOINTS)
    if lock_file is not None:
        lock.check(lock_file, esm_cfg["name"], seen, lock.CHECKPOINTS)
    for dest, source in cached.items():
        with atomic_output(dest) as tmp:
            shutil.copyfile(source, tmp)
    record_sha256(model_out, seen[checkpoint["model"]["url"]])  # hashed above, before the lock check
