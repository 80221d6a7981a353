"""Out-of-core training (Hayakawa & Narihira 2020): networks, training, memory planner.

Main objects: :func:`plan_spec` / :func:`plan` (the memory one training iteration needs, and
the smallest out-of-core budget; a :class:`Plan`), :func:`build_training_graph`,
:class:`ModelSpec` and :func:`build` (the ResNet / DenseNet networks). They are imported on
first use, so ``import ooctrain`` stays cheap.
"""
from common.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "plan": "planner", "plan_spec": "planner", "Plan": "planner",
    "build_training_graph": "graph", "ModelSpec": "models", "build": "models",
})
