"""``bihmf predict``: a trained benchmark run applied to a user's own structures.

The run folder decides everything about the model; the command line only names the files, the
chains and where the outputs go. ``model.pt`` gives the weights, the :class:`bihmf.run.RunSpec`
(encoder, fusion, task and its options, graph residues) and the model config; the provenance in
``metrics.json`` gives the ESM checkpoint's sha256, the layout of the embedding cache the model
read in training (layers, width, depth, window settings) and where that cache lies, whether the
training graphs carried ligand atoms, and the bihmf version. Before any file is read, a
:class:`RunError` stops the command for

* a checkpoint whose sha256 differs from the run's (other weights give other embeddings),
* a cache built from another checkpoint, lacking a layer the model reads, or windowed differently,
* a bihmf release series other than the run's (the model code may have changed),
* a ligand-trained run without ``--ligand`` (or the reverse), a pocket run without a cutoff.

Each file then goes the training path: :func:`bihmf.data.structure.read_chains` (same altloc,
HETATM and missing-atom rules), one protein of the chosen chains (as bce/psr/lba records are) or
one per chain (``per_chain``, as ppbs/react records are), ESM rows per chain from the run's cache
when its sequence hash is there and from the checkpoint otherwise (with the cache's window
settings), :func:`bihmf.batching.protein_graph` with the run's ``graph_residues``, the model.
A file that cannot be predicted (missing, not a structure, no protein chain, only unknown
residues, no backbone, no pocket near its ligand) becomes an :class:`InputError` in the summary
and the other files go on. A protein chain is what
:meth:`~bihmf.data.structure.ChainResidues.protein_problem` accepts (DNA/RNA chains and lone
modified residues are not); each file's summary line lists the chains left out with the reason
and, per predicted chain, the residues skipped for lacking a CA. A blank chain id is ``_``.

LBA pockets: the amino-acid residues with any heavy atom within ``pocket_cutoff`` Å of any
ligand heavy atom. Training pockets come with the dataset (ATOM3D ships them), so the run cannot
know their cutoff; the user states it (the demo's LBA fixture used 6 Å, see
``tests/fixtures/README_atom3d.md``).

Modules, one per seam: ``options`` (what the user chooses, the two error kinds), ``trained``
(run folder -> model, version check), ``embeddings`` (cache reuse, checkpoint check, embedding
on the fly), ``structures`` (input files -> protein records, ligands, pockets), ``outputs``
(tables, B-factor copies, plots), ``pipeline`` (the file loop and the summary).
"""

from bihmf.predict.options import TABLE_FORMATS, InputError, PredictOptions, RunError
from bihmf.predict.pipeline import SUMMARY_FILE, predict

__all__ = ["SUMMARY_FILE", "TABLE_FORMATS", "InputError", "PredictOptions", "RunError", "predict"]
