"""X-UMX (CrossNet-Open-Unmix) and UMX (Open-Unmix) music source separation on NNabla.

Modules: :mod:`xumx.model` (networks), :mod:`xumx.spectral` (STFT / iSTFT),
:mod:`xumx.loss` (training losses), :mod:`xumx.weights` (official weight files, config dict),
:mod:`xumx.separator` (end-to-end separation). Submodules import nnabla lazily where possible.
"""
from .model import SAMPLE_RATE, SOURCES, XUMX, CrossNet, OpenUnmix, bandwidth_to_max_bin  # noqa: F401
from .separator import Separator, build_nnabla_runner  # noqa: F401
from .weights import infer_config, load, load_umx, load_xumx  # noqa: F401

__all__ = ["SAMPLE_RATE", "SOURCES", "XUMX", "CrossNet", "OpenUnmix", "bandwidth_to_max_bin",
           "Separator", "build_nnabla_runner", "infer_config", "load", "load_umx", "load_xumx"]
