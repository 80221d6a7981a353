"""ResNet-20 training-step benchmark: float vs. learnable quantizers (fused and graph-composed).

Run (from the repository root)::

    .venv/bin/python mixed-precision-dnns/bench/bench_step.py            # batch 128
    .venv/bin/python mixed-precision-dnns/bench/bench_step.py --batch 32 --steps 5 --warmup 1

One training step = forward, loss (softmax cross entropy), zero_grad, backward, weight decay
and a Momentum update, on random CIFAR-sized input (N, 3, 32, 32) and random labels. The
variants, all built in this one process (each in its own parameter scope):

* ``float``: no quantization (experiment ``DEFAULT``);
* ``U3 fused`` / ``U3 graph``: weights ``parametric_fp_d_xmax``, activations
  ``parametric_fp_d_xmax_relu`` (``PARAMETRIC_FP_WAQ_DELTA_XMAX``) with the fused CPU
  quantizers (:mod:`mpdnn.fused`) or the graph-composed reference (``fused=False``, the
  way the official implementation composes them from nnabla functions);
* ``P3 fused`` / ``P3 graph``: the same with ``parametric_pow2_xmin_xmax`` (``_relu``)
  (``PARAMETRIC_POW2_WAQ_XMIN_XMAX``).

After ``--warmup`` steps per variant, ``--steps`` rounds are timed; every round runs one
step of each variant in turn (round robin, so a noisy machine slows all variants alike)
and the table reports the median ms/step (wall clock, and this process's CPU time, which
other processes on the machine disturb less) and its ratio to the float median. A second table
times one activation quantizer alone (forward + backward) on ResNet-20's largest
activation, (batch, 16, 32, 32).
"""
import os
import time

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np

from common.cli import NonNegativeInt, Parser, PositiveInt
from common.cli import run_cli
from common.terminal import progress
from mpdnn import quantizers as Q
from mpdnn.experiments import get_experiment
from mpdnn.resnet_cifar import resnet_cifar

# (label, experiment name, fused)
VARIANTS = (
    ("float", "DEFAULT", None),
    ("U3 fused", "PARAMETRIC_FP_WAQ_DELTA_XMAX", True),
    ("U3 graph", "PARAMETRIC_FP_WAQ_DELTA_XMAX", False),
    ("P3 fused", "PARAMETRIC_POW2_WAQ_XMIN_XMAX", True),
    ("P3 graph", "PARAMETRIC_POW2_WAQ_XMIN_XMAX", False),
)

GOAL = 1.3   # the target: a quantized (weights + activations) step / float step


class Step:
    """One variant: its network, loss and solver, built in parameter scope ``scope``."""

    def __init__(self, label, cfg, fused, batch, scope):
        self.label, self.scope = label, scope
        self.weight_decay = cfg.weight_decay
        rng = np.random.default_rng(0)
        self.x = nn.Variable.from_numpy_array(
            rng.normal(0, 1, (batch, 3, 32, 32)).astype(np.float32))
        self.t = nn.Variable.from_numpy_array(rng.integers(0, 10, (batch, 1)).astype(np.int32))
        with nn.parameter_scope(scope):
            logits = resnet_cifar(self.x, 10, cfg, test=False, fused=fused)
            self.params = nn.get_parameters()          # trainable ones only
        self.loss = F.mean(F.softmax_cross_entropy(logits, self.t))
        self.solver = S.Momentum(cfg.initial_learning_rate, cfg.momentum)
        self.solver.set_parameters(self.params)

    def __call__(self):
        self.loss.forward(clear_no_need_grad=True)
        self.solver.zero_grad()
        self.loss.backward(clear_buffer=True)
        self.solver.weight_decay(self.weight_decay)
        self.solver.update()
        return float(self.loss.d)


def time_steps(steps, rounds, warmup):
    for step in progress(steps, desc="warm-up", leave=False):
        for _ in range(warmup):
            step()
    times = {s.label: [] for s in steps}
    for _ in progress(range(rounds), desc="timed rounds", leave=False):
        for step in steps:
            t0, c0 = time.perf_counter(), time.process_time()
            loss = step()
            times[step.label].append((time.perf_counter() - t0, time.process_time() - c0))
            if not np.isfinite(loss):
                raise RuntimeError(f"{step.label}: loss became {loss}")
    return {k: 1e3 * np.median(np.array(v), axis=0) for k, v in times.items()}


def time_quantizers(batch, rounds):
    """Median ms of one activation quantizer's forward and backward on (batch, 16, 32, 32)."""
    x = np.random.default_rng(1).normal(0, 1, (batch, 16, 32, 32)).astype(np.float32)
    calls = []
    for kind, init, paper in (("parametric_fp_d_xmax", {"d": 2 ** -3, "xmax": 2.0}, "U3"),
                              ("parametric_pow2_xmin_xmax", {"xmin": 2 ** -7, "xmax": 2.0}, "P3")):
        for fused in (True, False):
            with nn.parameter_scope(f"quantizer_{paper}_{fused}"):
                xv = nn.Variable.from_numpy_array(x, need_grad=True)
                y = Q.quantize(xv, kind, sign=False, with_zero=True, init=init, fused=fused)
            calls.append((f"{paper} {'fused' if fused else 'graph'}", y))
    times = {label: [] for label, _ in calls}
    for _, y in calls:                       # warm-up
        y.forward(clear_no_need_grad=True)
        y.backward(clear_buffer=True)
    for _ in progress(range(rounds), desc="quantizer rounds", leave=False):
        for label, y in calls:
            t0 = time.perf_counter()
            y.forward(clear_no_need_grad=True)
            t1 = time.perf_counter()
            y.backward(clear_buffer=True)
            times[label].append((t1 - t0, time.perf_counter() - t1))
    return {k: 1e3 * np.median(np.array(v), axis=0) for k, v in times.items()}


def main(argv=None):
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=PositiveInt, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=PositiveInt, default=10,
                   help="timed rounds; each runs one step of every variant (default 10)")
    p.add_argument("--warmup", type=NonNegativeInt, default=2,
                   help="untimed steps per variant (default 2)")
    args = p.parse_args(argv)

    from nnabla.ext_utils import get_extension_context
    nn.set_default_context(get_extension_context("cpu"))
    nn.clear_parameters()
    load = os.getloadavg()
    steps = [Step(label, get_experiment(name), fused, args.batch, f"v{i}")
             for i, (label, name, fused) in enumerate(VARIANTS)]
    ms = time_steps(steps, args.steps, args.warmup)
    q = time_quantizers(args.batch, max(args.steps, 5))

    base, cpu_base = ms["float"]
    print(f"\nResNet-20 training step, batch {args.batch}, input {args.batch}x3x32x32, "
          f"median of {args.steps} interleaved rounds after {args.warmup} warm-up steps; "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| variant | ms/step | x float | CPU ms/step | x float (CPU) |")
    print("|---|---:|---:|---:|---:|")
    for label, *_ in VARIANTS:
        wall, cpu = ms[label]
        print(f"| {label} | {wall:.1f} | {wall / base:.2f} | {cpu:.1f} | {cpu / cpu_base:.2f} |")
    worst = max(ms[label][0] / base for label, *_ in VARIANTS if label.endswith("fused"))
    print(f"\nGoal (quantized W+A step <= {GOAL:.1f}x float, fused): "
          f"{'met' if worst <= GOAL else 'NOT met'} (worst {worst:.2f}x)")
    print(f"\nOne activation quantizer (sign=False, with_zero=True), forward + backward on "
          f"{args.batch}x16x32x32, median of {max(args.steps, 5)} rounds")
    print("| quantizer | forward ms | backward ms | total ms |")
    print("|---|---:|---:|---:|")
    for label, (fwd, bwd) in q.items():
        print(f"| {label} | {fwd:.1f} | {bwd:.1f} | {fwd + bwd:.1f} |")
    return 0


if __name__ == "__main__":
    run_cli(main)
