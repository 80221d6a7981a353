"""Package exports imported on first use, so that ``import <paper package>`` stays cheap
(nnabla and the networks load only when an exported object is touched)."""
import importlib


def lazy_exports(package, exports):
    """``(__getattr__, __all__)`` for a package ``__init__``: ``exports`` maps each exported
    name to the submodule that defines it, ``"module"`` or ``"module:attribute"`` when the
    attribute is named differently there."""
    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = exports[name].partition(":")
        return getattr(importlib.import_module(f".{module}", package), attribute or name)
    return __getattr__, sorted(exports)
