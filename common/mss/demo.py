"""The part of ``make demo`` that both separation papers report the same way: the smoke
training curves, the museval scores of the trained model on the bundled track and how far
the nnabla and ONNX Runtime backends differ, with the commands that produced them."""
from pathlib import Path

import numpy as np

from common.mss.audio import load_audio
from common.report import markdown_table, plot_curves
from common.train.monitor import read_series

__all__ = ["report_smoke_pipeline"]


def report_smoke_pipeline(report, *, title, intro, out, run_dir, loss_label, track_stem,
                          targets, commands):
    """Add the section of one paper to ``report``: ``intro`` (markdown), the training and
    validation loss of the run in ``run_dir`` (y axis ``loss_label``), ``out/eval``'s scores
    and plot, the largest nnabla / ONNX difference per target of the estimates in
    ``out/separated-{nnabla,onnx}/<track_stem>/``, and the ``commands``."""
    out = Path(out)
    curves = {name: read_series(run_dir, name) for name in ("training loss", "validation loss")}
    plot = plot_curves(curves, out / "loss.png", title=f"{title}: smoke training",
                       xlabel="epoch", ylabel=loss_label)
    valid = curves["validation loss"][1]
    report.add(f"## {title}\n\n{intro}\n\n"
               f"Validation loss: {valid[0]:.3f} (epoch 0) -> {valid[-1]:.3f} "
               f"(epoch {len(valid) - 1}).")
    report.image(plot, f"{title}: smoke training loss")
    report.add("museval scores of the trained smoke model on the bundled track "
               "(median over 1 s frames):\n\n" + (out / "eval" / "scores_test.md").read_text())
    report.image(out / "eval" / "sdr_test.png", "SDR per target")
    rows = []
    for target in targets:
        a, _ = load_audio(out / "separated-nnabla" / track_stem / f"{target}.wav")
        b, _ = load_audio(out / "separated-onnx" / track_stem / f"{target}.wav")
        rows.append([target, f"{np.abs(a - b).max():.2e}"])
    report.add("Max abs difference between the nnabla and the ONNX Runtime backend, per "
               "separated target:\n\n" + markdown_table(["target", "max abs diff"], rows))
    report.add("Commands:\n\n```\n" + "\n".join(commands) + "\n```")
