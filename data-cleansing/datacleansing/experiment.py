"""``eval.py``: the reference's whole experiment (``eval_sgd_influence.py`` /
``eval_influence_functions.py``) in one command: train, score with every method, retrain
without the k most harmful samples for every k and trial, and summarize into ``summary.csv``
and the accuracy-vs-removed plot ``summary.png``.

``--output OUT`` is an ordinary run folder (what ``train.py --output OUT`` writes) that also
receives the scores (``influence_<method>.csv``) and the sweep (``summary.csv``,
``summary.png``, ``trials/<t>/``), so ``score.py OUT`` and ``sweep.py OUT`` work on it too.
Running the same command again continues: an unfinished training resumes from its last
checkpoint, finished scores and rows are reused; other training options for the same folder
are refused in one line, naming them.
"""
import time
from pathlib import Path

from common.context import context_from_args
from common.errors import Interrupted, UserError
from common.train.out_of_core import out_of_core_from_args
from common.train.run import TrainingRun, holds_run
from datacleansing import cli as C
from datacleansing.influence import METHODS
from datacleansing.options import refuse_multi_process

# eval_sgd_influence.py's default -r/--remove_n_list (counts above the training set are left out)
OFFICIAL_COUNTS = (0, 1, 10, 40, 100, 200, 600, 1000, 3000, 5000, 10000, 30000)
DEFAULT_OUTPUT = Path("runs") / "data-cleansing" / "eval"


def build_parser():
    p = C.training_parser(
        "The reference's experiment in one command: train (the paper's recipe with a dataset "
        "--root, else the CPU smoke run), score every training sample with each method, "
        "retrain without the k most harmful for every k and trial, and write summary.csv and "
        "summary.png into --output; run it again to continue.")
    p.set_defaults(output=str(DEFAULT_OUTPUT))
    C.add_training_args(p)
    C.add_sweep_args(p, methods=METHODS, counts=OFFICIAL_COUNTS)
    return p


def training_options(args):
    """The options train.py would record for this run (config.yaml)."""
    keys = vars(C.build_train_parser().parse_args([])).keys() - {"config"}
    opts = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    opts.update(resume=False, stop_at_epoch=0)
    if opts["root"]:     # later steps may run from another directory
        opts["root"] = str(Path(opts["root"]).resolve())
    return opts


def eval_main(argv=None):
    args = build_parser().parse_args(argv)
    refuse_multi_process()
    opts = training_options(args)
    C.check_train_options(opts)
    out = Path(opts["output"])
    methods = list(dict.fromkeys(args.methods))
    if "hara" in methods and opts["cache"] != "all":
        if methods != list(METHODS):     # asked for by name
            raise UserError("--methods hara needs the parameters of every traced step: add "
                            "--cache all, or leave hara out")
        methods.remove("hara")
        print("hara (SGD-influence) left out: it needs the run trained with --cache all")
    ooc = out_of_core_from_args(args, context_from_args(args))
    start = time.time()
    if (out / C.SUMMARY_NAME).is_file():
        # finished: only the options are checked (refused in one line when they differ)
        TrainingRun(out, opts, resume=True, hint="use the same options or a new --output").open()
        print(f"{out}: training finished before, reused")
    else:
        started = holds_run(out)
        print(f"{'continuing' if started else 'training'} the run in {out}", flush=True)
        try:
            C.train_run(dict(opts, resume=started), ooc=ooc)
        except Interrupted:
            raise Interrupted(f"interrupted while training (the last checkpoint in {out} is "
                              "kept); run the same eval.py command again to continue") from None
    base = C.Run(out)
    counts = sorted({k for k in args.counts if k <= base.n_train})
    left_out = sorted(set(args.counts) - set(counts))
    if left_out:
        print(f"--counts above the {base.n_train} training samples left out: "
              f"{', '.join(map(str, left_out))}")
    C.run_sweep(base, methods, counts, args, ooc, command="eval.py")
    print(f"eval.py done in {time.time() - start:.1f} s")
    return 0
