"""Mixed Precision DNNs (Uhlich et al., ICLR 2020) on NNabla.

Main objects: :func:`quantize` (a learnable quantizer of any of the six parametrizations,
``"U1".."U3"``, ``"P1".."P3"`` or the official names), :func:`parametrization`,
:func:`get_experiment` / :func:`list_experiments` (the official experiments by name),
:class:`NetworkMemory` (weight and activation memory of a built network). They are imported
on first use, so ``import mpdnn`` stays cheap.
"""
from common.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "quantize": "quantizers", "parametrization": "quantizers",
    "Experiment": "experiments", "get_experiment": "experiments",
    "list_experiments": "experiments", "NetworkMemory": "memory",
})
