"""Where one Hessian-vector product of the influence pass spends its time.

Run (from the repository root)::

    .venv/bin/python data-cleansing/bench/profile_hvp.py                # CNN, batch 64
    .venv/bin/python data-cleansing/bench/profile_hvp.py --model mlp

Builds the graphs ``influence.hessian_vector`` uses (double backprop of the step's mean
training loss, whole-batch statistics) on a batch of the bundled MNIST subset, and, for
comparison, one ordinary forward + backward of the same loss (what a training step
costs). Prints the median time of each over ``--repeats`` runs, their ratio, and the
nnabla functions that take the most time inside the Hessian-vector product. Every
scoring implementation performs one such product per traced step, so the product's
time bounds how much faster any implementation of the per-sample dot products can
make the whole influence pass.
"""
import time

import numpy as np

from common.cli import Parser, PositiveInt


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class FunctionTimer:
    """Seconds per nnabla function type, from forward/backward hooks."""

    def __init__(self):
        self.seconds, self._start = {}, None

    def pre(self, f):
        self._start = time.perf_counter()

    def post(self, f):
        name = f.info.type_name
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._start


def main(argv=None):
    from datacleansing.options import MODEL_NAMES, refuse_multi_process

    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn", choices=MODEL_NAMES)
    p.add_argument("--batch-size", type=PositiveInt, default=64)
    p.add_argument("--repeats", type=PositiveInt, default=5)
    p.add_argument("--top", type=PositiveInt, default=8, help="how many functions to list")
    args = p.parse_args(argv)
    refuse_multi_process()

    import nnabla as nn
    import nnabla.functions as F

    from common.report import markdown_table
    from datacleansing import data as D
    from datacleansing.influence import InfluenceGraphs, _trained, hessian_vector
    from datacleansing.models import build, per_sample_loss

    splits = D.load("mnist5k")
    x, y = splits.x_train[:args.batch_size], splits.y_train[:args.batch_size]
    nn.clear_parameters()
    xv, yv = nn.Variable(x.shape), nn.Variable((len(y), 1))
    loss = F.mean(per_sample_loss(build(args.model, xv, splits.n_classes, bn="batch"), yv))
    xv.d, yv.d = x, y.reshape(-1, 1)
    params = nn.get_parameters(grad_only=False)
    rng = np.random.default_rng(0)
    u = {k: rng.standard_normal(params[k].shape).astype(np.float32) * 1e-2
         for k in _trained(params)}
    graphs = InfluenceGraphs(args.model, splits)

    def train_pass():
        loss.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)

    def hvp():
        hessian_vector(graphs, u, x, y)

    hvp()                               # builds the graph once, outside the timing
    plain_s, hvp_s = median_seconds(train_pass, args.repeats), median_seconds(hvp, args.repeats)

    timer = FunctionTimer()
    s = graphs.hvp(len(y))[3]
    s.forward(clear_no_need_grad=True, function_pre_hook=timer.pre, function_post_hook=timer.post)
    s.backward(clear_buffer=True, function_pre_hook=timer.pre, function_post_hook=timer.post)
    total = sum(timer.seconds.values())
    top = sorted(timer.seconds.items(), key=lambda kv: -kv[1])[:args.top]

    print(f"{args.model}, batch {len(y)}, median of {args.repeats}:")
    print(f"  forward + backward of the mean loss: {plain_s:.3f} s")
    print(f"  Hessian-vector product (double backprop): {hvp_s:.3f} s "
          f"= {hvp_s / plain_s:.2f}x a forward + backward\n")
    print(markdown_table(["function (in one Hessian-vector product)", "s", "share"],
                         [[name, f"{sec:.3f}", f"{sec / total:.0%}"] for name, sec in top]))
    return 0


if __name__ == "__main__":
    from common.cli import run_cli
    run_cli(main)
