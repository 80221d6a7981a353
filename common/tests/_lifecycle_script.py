"""A minimal training script on the shared run lifecycle (common.train.run), used by
test_run_lifecycle.py the way a paper's train.py would be used: tiny linear regression,
a checkpoint every ``--checkpoint-interval`` steps, ``--sleep`` seconds per step so that a
test can interrupt it, ``--diverge-at`` to make the loss NaN at that step."""
import sys
import time
from pathlib import Path

import numpy as np

from common.cli import NonNegativeFloat, NonNegativeInt, Parser, PositiveFloat, PositiveInt
from common.cli import run_cli
from common.terminal import progress


def main(argv=None):
    p = Parser(prog="lifecycle")
    p.add_argument("--output", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=PositiveInt, default=20)
    p.add_argument("--lr", type=PositiveFloat, default=0.1)
    p.add_argument("--checkpoint-interval", type=PositiveInt, default=5)
    p.add_argument("--sleep", type=NonNegativeFloat, default=0.0)
    p.add_argument("--diverge-at", type=NonNegativeInt, default=0)
    p.add_argument("--data", default=None, help="a .npy file of inputs (validated first)")
    args = p.parse_args(argv)

    import nnabla as nn
    import nnabla.functions as F
    import nnabla.parametric_functions as PF
    import nnabla.solvers as S

    from common.errors import UserError
    from common.train.run import TrainingRun

    run = TrainingRun(args.output, args, resume=args.resume).open()
    if args.data is not None and not Path(args.data).is_file():
        raise UserError(f"--data {args.data}: no such file")
    run.begin()
    rng = np.random.RandomState(0)
    xs = rng.randn(32, 4).astype(np.float32)
    ys = xs @ np.arange(4, dtype=np.float32)[:, None]
    x, t = nn.Variable((32, 4)), nn.Variable((32, 1))
    loss = F.mean(F.squared_error(PF.affine(x, 1), t))
    solver = S.Sgd(args.lr)
    solver.set_parameters(nn.get_parameters())
    step = 0
    latest = run.latest()
    if latest is not None:
        step, _, _ = run.checkpoints.restore(latest, {"sgd": solver})
        print(f"resumed at iteration {step}", flush=True)

    def save():
        run.save(step, {"sgd": solver}, config=vars(args))

    with run.guard():
        for _ in progress(range(step, args.steps), desc="training"):
            x.d, t.d = xs, ys
            solver.zero_grad()
            loss.forward()
            loss.backward()
            solver.update()
            step += 1
            value = float("nan") if step == args.diverge_at else float(loss.d)
            print(f"step {step}", flush=True)
            time.sleep(args.sleep)
            run.step_done(step, value, save=save)
            if step % args.checkpoint_interval == 0:
                save()
    nn.save_parameters(str(Path(args.output) / "final.h5"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
