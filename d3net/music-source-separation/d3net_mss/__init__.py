"""D3Net music source separation (vocals, drums, bass, other) on NNabla.

Main objects: :class:`Separator` (``Separator.from_pretrained("d3net-mss")`` or a path;
``separator(audio)`` -> ``{target: (samples, channels)}``), :class:`D3NetMSS` (the network),
:func:`load_config`, :func:`load` (official weight files). Modules: :mod:`d3net_mss.separator`,
:mod:`d3net_mss.model`, :mod:`d3net_mss.weights`, :mod:`d3net_mss.training`.
"""
from .model import SAMPLE_RATE, SOURCES, D3NetMSS, load_config  # noqa: F401
from .separator import Separator  # noqa: F401
from .weights import load  # noqa: F401

__all__ = ["SAMPLE_RATE", "SOURCES", "D3NetMSS", "load_config", "Separator", "load"]
