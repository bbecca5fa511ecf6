"""Task registry: name -> module with

``Head(width, dropout, options)``   readout module on the fused residue states
``prepare(head, train_targets)``    fit/check anything that depends on the training targets
``loss(output, graph, head)``       scalar training loss
``predictions(output, graph, head)`` what evaluation keeps of a batch (numpy)
``evaluate(parts) -> dict``          metrics over a split's batches
``SELECTION_METRIC``                 validation metric maximised by early stopping
"""

from types import ModuleType

from bihmf.tasks import graph_classification, graph_regression, residue_binary

TASKS: dict[str, ModuleType] = {
    "residue_binary": residue_binary,
    "graph_classification": graph_classification,
    "graph_regression": graph_regression,
}
