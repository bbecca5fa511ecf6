"""Random values for every parameter a model compared with its reference holds.

Initialisations leave biases at zero and norm scales / shifts at one / zero, and with such
parameters a bias counted once per neighbour instead of once per node, a dropped bias or a
norm's affine step applied twice compute the same numbers as the right code. Every oracle test
therefore draws all parameters afresh before copying them to the reference.
"""

from __future__ import annotations

import torch
from torch import nn

SPREAD = 0.1  # the spread given to a parameter that initialises to one constant


def randomise_parameters(module: nn.Module, seed: int) -> None:
    """Draw every parameter of ``module`` anew, deterministically from ``seed``.

    A parameter initialised with a spread (weights) is redrawn from a normal distribution of that
    spread, so activations keep their scale through deep stacks; one initialised to a constant
    (biases, norm scales and shifts) becomes that constant plus noise of spread ``SPREAD``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(parameter.dtype)
            constant = parameter.numel() < 2 or bool(parameter.min() == parameter.max())
            if constant:
                parameter.add_(SPREAD * noise)
            else:
                parameter.copy_(float(parameter.std()) * noise)


def assert_all_random(module: nn.Module) -> None:
    """No parameter of ``module`` is left at a constant (an all-zero bias, an all-one scale)."""
    for name, parameter in module.named_parameters():
        assert parameter.numel() < 2 or parameter.min() < parameter.max(), f"{name} is constant"
