"""fair-esm's ``scripts/extract.py`` as a command, the baseline of ``bench.embed_vs_extract``.

The PyPI fair-esm 2.0.0 wheel does not ship the script, so this re-expresses its documented
behaviour and command line with fair-esm's public API (not its code):
``python bench/extract_command.py MODEL FASTA OUT --include per_tok --repr_layers 1 2
--toks_per_batch 4096 --truncation_seq_length 1022 [--nogpu]``. Sequences are sorted by length
and packed greedily into batches of ``toks_per_batch`` (one extra token per sequence),
truncated at ``truncation_seq_length`` residues, run through ESM2.forward under
``torch.no_grad``, and each protein is ``torch.save``d to ``OUT/<label>.pt`` as
``{"label", "representations": {layer: float tensor [L', D]}}``.

It imports only what the script imports (torch and fair-esm), so a fresh process of it pays
what a user running ``extract.py`` pays. Two things differ from the script, both stated:
torch >= 2.6 loads weights-only, so ``argparse.Namespace`` (fair-esm's config type) is
allow-listed as the embed stage does; ``--precision`` (not in ``extract.py``) casts the model
to half or bfloat16, for a comparison with the embed stage at the same reduced precision.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from esm import FastaBatchedDataset, pretrained

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_location", type=Path)
    parser.add_argument("fasta_file", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--toks_per_batch", type=int, default=4096)
    parser.add_argument("--repr_layers", type=int, nargs="+", default=[-1])
    parser.add_argument("--include", nargs="+", choices=["per_tok"], required=True)
    parser.add_argument("--truncation_seq_length", type=int, default=1022)
    parser.add_argument("--nogpu", action="store_true")
    parser.add_argument("--precision", choices=list(DTYPES), default="float32")
    args = parser.parse_args()

    torch.serialization.add_safe_globals([argparse.Namespace])
    model, alphabet = pretrained.load_model_and_alphabet(str(args.model_location))
    model.eval()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.nogpu else "cpu")
    model = model.to(device=device, dtype=DTYPES[args.precision])

    dataset = FastaBatchedDataset.from_file(args.fasta_file)
    batches = dataset.get_batch_indices(args.toks_per_batch, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(
        dataset, collate_fn=alphabet.get_batch_converter(args.truncation_seq_length), batch_sampler=batches
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    layers = [(i + model.num_layers + 1) % (model.num_layers + 1) for i in args.repr_layers]
    with torch.no_grad():
        for labels, strs, tokens in loader:
            representations = model(tokens.to(device), repr_layers=layers, return_contacts=False)["representations"]
            for row, label in enumerate(labels):
                kept = min(args.truncation_seq_length, len(strs[row]))
                per_tok = {layer: t[row, 1 : kept + 1].clone().cpu() for layer, t in representations.items()}
                torch.save({"label": label, "representations": per_tok}, args.output_dir / f"{label}.pt")


if __name__ == "__main__":
    main()
