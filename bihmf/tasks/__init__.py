"""Task registry: name -> module with

``Head(width, dropout, options)``   readout module on the fused residue states
``prepare(head, train_targets)``    fit/check anything that depends on the training targets
``loss(output, graph, head)``       scalar training loss
``predictions(output, graph, head)`` what evaluation keeps of a batch (numpy)
``prediction_owners(graph)``         the graph of the batch each predictions row belongs to
``evaluate(parts) -> dict``          metrics over a split's batches
``SELECTION_METRIC``                 validation metric maximised by early stopping
``OPTIONS``                          dataset config keys the head needs (passed as ``task_options``)
``PER_RESIDUE``                      whether predictions are per residue (else per protein)
``outputs(output, graph, head)``     what ``bihmf predict`` reports, one value per protein
``output_columns(value)``            that value as prediction-table columns (per residue if PER_RESIDUE)
"""

from types import ModuleType
from typing import Any

from bihmf.tasks import graph_classification, graph_regression, residue_binary

TASKS: dict[str, ModuleType] = {
    "residue_binary": residue_binary,
    "graph_classification": graph_classification,
    "graph_regression": graph_regression,
}


def task_options(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    """The options the dataset's task declares, with the dataset's values."""
    return {key: dataset_cfg[key] for key in TASKS[dataset_cfg["task"]].OPTIONS}
