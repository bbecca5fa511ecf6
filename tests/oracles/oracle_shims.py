"""Stand-ins for the compiled PyG extensions torch-scatter and torch-cluster that the
reference packages import.

torch-scatter (like torch-sparse and torch-cluster) publishes no wheels for our torch and takes about a
quarter of an hour to build from source, so the oracle tests register this pure-torch
module under its name before a reference is imported. Only the calls the references make
are provided; each reduces with ``torch.Tensor.scatter_reduce`` exactly as the extension would.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import torch
from torch import Tensor

REDUCE = {"sum": "sum", "add": "sum", "mean": "mean", "max": "amax", "min": "amin", "mul": "prod"}


def _broadcast(index: Tensor, src: Tensor, dim: int) -> Tensor:
    dim = dim % src.dim()
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.view(shape).expand_as(src) if index.dim() == 1 else index.expand_as(src)


def scatter(src: Tensor, index: Tensor, dim: int = -1, out: Tensor | None = None,
            dim_size: int | None = None, reduce: str = "sum") -> Tensor:
    """torch_scatter.scatter: empty groups give 0, as in the extension."""
    dim = dim % src.dim()
    index = _broadcast(index, src, dim)
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    shape = list(src.shape)
    shape[dim] = dim_size
    base = torch.zeros(shape, dtype=src.dtype, device=src.device) if out is None else out
    return base.scatter_reduce(dim, index, src, REDUCE[reduce], include_self=out is not None)


def _named(reduce: str):
    def call(src: Tensor, index: Tensor, dim: int = -1, out: Tensor | None = None,
             dim_size: int | None = None) -> Tensor:
        return scatter(src, index, dim, out, dim_size, reduce)
    return call


def _with_argument(reduce: str):
    """scatter_max / scatter_min return (values, argument); the argument is not used by the
    references, so it is filled with the group's first index for shape compatibility."""
    def call(src: Tensor, index: Tensor, dim: int = -1, out: Tensor | None = None,
             dim_size: int | None = None) -> tuple[Tensor, Tensor]:
        values = scatter(src, index, dim, out, dim_size, reduce)
        return values, torch.zeros_like(values, dtype=torch.long)
    return call


def scatter_softmax(src: Tensor, index: Tensor, dim: int = -1, dim_size: int | None = None) -> Tensor:
    dim = dim % src.dim()
    peak = scatter(src, index, dim, dim_size=dim_size, reduce="max")
    shifted = (src - peak.gather(dim, _broadcast(index, src, dim))).exp()
    total = scatter(shifted, index, dim, dim_size=dim_size, reduce="sum")
    return shifted / total.gather(dim, _broadcast(index, src, dim))


def scatter_log_softmax(src: Tensor, index: Tensor, dim: int = -1, eps: float = 1e-12,
                        dim_size: int | None = None) -> Tensor:
    """log of :func:`scatter_softmax`, shifted by the group maximum as the extension does."""
    dim = dim % src.dim()
    peak = scatter(src, index, dim, dim_size=dim_size, reduce="max")
    shifted = src - peak.gather(dim, _broadcast(index, src, dim))
    total = scatter(shifted.exp(), index, dim, dim_size=dim_size, reduce="sum")
    return shifted - (total + eps).log().gather(dim, _broadcast(index, src, dim))


def _module(name: str, **members) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(members)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def install() -> None:
    """Register torch_scatter (with its ``composite`` submodule) unless the real extension is
    importable. A test that needs torch_sparse or torch_cluster names registers its own."""
    try:
        import torch_scatter  # noqa: F401
        return
    except ImportError:
        pass
    composite = _module("torch_scatter.composite", scatter_softmax=scatter_softmax,
                        scatter_log_softmax=scatter_log_softmax)
    scatter_module = _module(
        "torch_scatter", scatter=scatter, scatter_add=_named("sum"), scatter_sum=_named("sum"),
        scatter_mean=_named("mean"), scatter_mul=_named("mul"), scatter_max=_with_argument("max"),
        scatter_min=_with_argument("min"), scatter_softmax=scatter_softmax,
        scatter_log_softmax=scatter_log_softmax, composite=composite,
    )
    sys.modules["torch_scatter"] = scatter_module
    sys.modules["torch_scatter.composite"] = composite


def _pair_distances(x: Tensor, batch: Tensor | None, loop: bool) -> Tensor:
    """[N, N] distances, infinite between graphs of the batch and (unless ``loop``) on the diagonal."""
    distance = torch.cdist(x, x)
    if batch is not None:
        distance = distance.masked_fill(batch[:, None] != batch[None, :], float("inf"))
    if not loop:
        distance.fill_diagonal_(float("inf"))
    return distance


def _flowing(neighbour: Tensor, centre: Tensor, flow: str) -> Tensor:
    """torch_cluster's layout: row 0 the neighbour and row 1 the centre for source_to_target."""
    return torch.stack([neighbour, centre] if flow == "source_to_target" else [centre, neighbour])


def knn_graph(x: Tensor, k: int, batch: Tensor | None = None, loop: bool = False, flow: str = "source_to_target",
              cosine: bool = False, num_workers: int = 1) -> Tensor:
    """torch_cluster.knn_graph by brute force: each node's ``k`` nearest nodes of its graph."""
    if cosine:
        raise NotImplementedError("cosine kNN is not used by the references")
    distance = _pair_distances(x, batch, loop)
    nearest = distance.topk(min(k, x.shape[0]), dim=1, largest=False)
    centre = torch.arange(x.shape[0]).repeat_interleave(nearest.indices.shape[1])
    found = torch.isfinite(nearest.values).flatten()
    return _flowing(nearest.indices.flatten()[found], centre[found], flow)


def radius_graph(x: Tensor, r: float, batch: Tensor | None = None, loop: bool = False, max_num_neighbors: int = 32,
                 flow: str = "source_to_target", num_workers: int = 1) -> Tensor:
    """torch_cluster.radius_graph by brute force. The extension keeps the first
    ``max_num_neighbors`` it happens to find, an order-dependent choice no other code can
    reproduce; so this stand-in refuses input where a node has more, instead of choosing."""
    centre, neighbour = torch.nonzero(_pair_distances(x, batch, loop) < r, as_tuple=True)
    crowded = torch.bincount(centre, minlength=x.shape[0]).max() if centre.numel() else 0
    if crowded > max_num_neighbors:
        raise ValueError(f"a node has {int(crowded)} neighbours within {r}, above max_num_neighbors={max_num_neighbors}")
    return _flowing(neighbour, centre, flow)


def install_torchdrug_stand_ins() -> None:
    """What torchdrug 0.2.1 imports beyond our stack: torch_cluster (its graph construction,
    here by brute force: :func:`knn_graph`, :func:`radius_graph`) and rdkit's removed
    ``Chem.Draw.mplCanvas`` (molecule drawing, never run). Both are registered only where the
    real module is missing."""
    install()
    try:
        import torch_cluster  # noqa: F401
    except ImportError:
        sys.modules["torch_cluster"] = _module("torch_cluster", knn_graph=knn_graph, radius_graph=radius_graph)
    import rdkit.Chem.Draw as draw

    if not hasattr(draw, "mplCanvas"):
        draw.mplCanvas = _module("rdkit.Chem.Draw.mplCanvas", Canvas=type("Canvas", (), {}))
        sys.modules["rdkit.Chem.Draw.mplCanvas"] = draw.mplCanvas
