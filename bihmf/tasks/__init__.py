"""Task registry: name -> module with a ``Head`` module class, ``loss``, ``predictions``,
``evaluate`` and ``SELECTION_METRIC`` (the validation metric early stopping maximises)."""

from types import ModuleType

from bihmf.tasks import residue_binary

TASKS: dict[str, ModuleType] = {
    "residue_binary": residue_binary,
}
