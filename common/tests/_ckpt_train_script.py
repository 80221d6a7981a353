"""Tiny resumable nnabla training run used by test_checkpoint.py's SIGKILL test.

Two-layer MLP on fixed random data; the body is trained with Adam and the head
with Momentum, so both kinds of solver state must survive a restart. Batch
order comes from a RandomState saved in the checkpoint and input noise from
numpy's global RNG, so a resumed run only matches an uninterrupted one if all
of that state is restored. Prints ``saving <step>`` just before each save so
the test can kill it mid-save; ``--slow-fsync`` widens that window.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--save-every", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--slow-fsync", type=float, default=0.0)
    args = p.parse_args(argv)

    if args.slow_fsync:
        real_fsync = os.fsync

        def slow_fsync(fd):
            time.sleep(args.slow_fsync)
            real_fsync(fd)
        os.fsync = slow_fsync

    import nnabla as nn
    import nnabla.functions as F
    import nnabla.parametric_functions as PF
    import nnabla.solvers as S
    from nnabla.logger import logger

    from common.train.checkpoint import CheckpointManager
    from common.train.monitor import TrainingLog
    from common.train.seeding import seed_everything
    logger.setLevel("WARNING")
    out = Path(args.out)
    rng = seed_everything(args.seed)
    data_rng = np.random.RandomState(1234)  # dataset is the same for every run
    xs = data_rng.randn(64, 8).astype(np.float32)
    ys = np.tanh(xs @ data_rng.randn(8, 2)).astype(np.float32)

    x = nn.Variable((16, 8))
    t = nn.Variable((16, 2))
    with nn.parameter_scope("body"):
        h = F.tanh(PF.affine(x, 32))
    with nn.parameter_scope("head"):
        y = PF.affine(h, 2)
    loss = F.mean(F.squared_error(y, t))
    adam = S.Adam(1e-2)
    with nn.parameter_scope("body"):
        adam.set_parameters(nn.get_parameters())
    momentum = S.Momentum(1e-2, 0.9)
    with nn.parameter_scope("head"):
        momentum.set_parameters(nn.get_parameters())
    solvers = {"body": adam, "head": momentum}

    ckpt = CheckpointManager(out / "ckpt", keep_last=2)
    start = 0
    if args.resume:
        state = ckpt.load_latest()
        if state is not None:
            start, _, extra = ckpt.restore(state, solvers)
            rng = extra["rng"]
            print(f"resumed {start}", flush=True)
    log = TrainingLog(out / "log", resume_step=start if args.resume else None)

    for step in range(start + 1, args.iters + 1):
        idx = rng.choice(len(xs), 16, replace=False)
        x.d = xs[idx] + 0.01 * np.random.randn(16, 8)
        t.d = ys[idx]
        loss.forward()
        adam.zero_grad()
        momentum.zero_grad()
        loss.backward()
        adam.update()
        momentum.update()
        log.add("train/loss", step, loss.d)
        if step % args.save_every == 0:
            print(f"saving {step}", flush=True)
            ckpt.save(step, solvers, config=vars(args), metric=float(loss.d),
                      extra={"rng": rng})

    final = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    np.savez(out / "final.npz", **final)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
