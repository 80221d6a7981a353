"""train.py and eval.py as a user runs them, on a SYNTHETIC data set written in the real
Cityscapes layout (d3net_seg.synthetic; there is no Cityscapes data offline).

The smoke configuration (the default of train.py without a dataset root) trains a tiny D3Net
for 60 iterations; the tests check that the loss falls, that eval.py's mIoU on the synthetic
val split rises from the initial to the final weights, that a run stopped half-way (or
interrupted with Ctrl-C) and resumed ends bit for bit where an uninterrupted run ends, the
run-folder contracts (occupied --output, --resume with other options, a diverging loss),
the data-parallel wiring (a faked MPI world), eval.py's result records and the one-line
errors.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from common.data.cityscapes import Cityscapes, label_ids_to_train_ids, list_pairs
from common.dev.testing import (assert_one_line_error, fake_world, files_under, interrupt_script,
                                run_script)
from common.errors import UserError
from common.runtime.params_io import read_param_file, write_param_file
from common.train.checkpoint import CheckpointManager
from common.train.monitor import read_series
from d3net_seg import synthetic, training
from d3net_seg.metrics import ConfusionMatrix
from d3net_seg.model import BN_MEAN_VAR, D3NetSegmentation, load_config, parameter_shapes

SEG = Path(__file__).resolve().parents[1]
CONFIGS = SEG / "configs"
ENV = {"NNABLA_RESEARCH_NO_PROGRESS": "1"}


def run(script, *args, check=True, env=None):
    return run_script(SEG / script, *args, check=check, env={**ENV, **(env or {})})


def series(run_dir, name):
    steps, values = read_series(run_dir, name)
    return steps.tolist(), values.tolist()


def parameter_bytes(path):
    """name -> (shape, raw bytes) of an nnabla parameter file: equal means bit for bit."""
    params, _ = read_param_file(path)
    return {name: (value.shape, value.tobytes()) for name, value in params.items()}


def checkpoint_steps(run_dir):
    return [s for s, _ in CheckpointManager(Path(run_dir) / "checkpoints",
                                            clean=False).checkpoints()]


def smoke_config():
    return yaml.safe_load((CONFIGS / "train_smoke.yaml").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The smoke run straight through, and the same run stopped half-way + --resume."""
    root = tmp_path_factory.mktemp("train")
    full, split = root / "full", root / "split"
    n = smoke_config()["max_iter"]
    run("train.py", "--output", full)
    first = run("train.py", "--output", split, "--stop-at-iter", n // 2)
    resumed = run("train.py", "--output", split, "--resume")
    return full, split, first, resumed


@pytest.fixture(scope="module")
def evals(runs, tmp_path_factory):
    """eval.py on the synthetic val split with the initial and the final weights."""
    full = runs[0]
    data = full / "synthetic-cityscapes"
    out = tmp_path_factory.mktemp("eval")
    before = run("eval.py", "--model", full / "model_param_00000000.h5", "--root", data,
                 "--out-dir", out / "before")
    after = run("eval.py", "--model", full / "final.h5", "--root", data, "--out-dir",
                out / "after", "--save-predictions")
    return out, before, after


# ---------------------------------------------------------------------------- training
def test_run_directory_and_official_parameter_names(runs):
    full = runs[0]
    for name in ("config.yaml", "network_config.yaml", "final.h5", "model_param_00000000.h5",
                 "model_param_00000030.h5", "training-loss.series.txt",
                 "learning-rate.series.txt", "synthetic-cityscapes/SYNTHETIC.txt"):
        assert (full / name).exists(), name
    assert sorted(p.name for p in (full / "checkpoints").glob("ckpt_*.npz"))[-1] == \
        "ckpt_00000060.npz"
    config = load_config(full / "network_config.yaml")
    smoke = smoke_config()
    for key in ("dens_k", "n_blocks", "num_layers", "intermediate_out_ch"):
        assert config["model"][key] == smoke[key]
    assert config["model"]["block_comp"] == load_config("D3Net_S")["model"]["block_comp"]
    params, _ = read_param_file(full / "final.h5")
    expected = parameter_shapes(config)
    assert list(params) == list(expected)
    assert all(params[k].shape == tuple(v) for k, v in expected.items())
    assert params["decode_head/conv_seg/conv/W"].shape == (19, smoke["channels"], 1, 1)
    saved = yaml.safe_load((full / "config.yaml").read_text())
    assert saved["max_iter"] == smoke["max_iter"] and saved["synthetic"] is True


def test_loss_falls_and_schedule_is_official_poly(runs):
    full = runs[0]
    steps, loss = series(full, "training loss")
    n = smoke_config()["max_iter"]
    assert steps == list(range(1, n + 1)) and all(np.isfinite(loss))
    assert np.mean(loss[-10:]) < 0.6 * np.mean(loss[:5]), loss
    steps, lr = series(full, "learning rate")
    cfg = smoke_config()
    official = [(cfg["lr"] - cfg["min_lr"]) * (1 - i / n) ** 0.9 + cfg["min_lr"]
                for i in range(n)]  # the official PolynomialScheduler at iteration i
    np.testing.assert_allclose(lr, official, rtol=1e-5)


def test_resume_continues_bit_exactly(runs):
    full, split, first, resumed = runs
    half = smoke_config()["max_iter"] // 2
    assert f"stopped after iteration {half}" in first.stdout
    assert f"resumed at iteration {half}" in resumed.stdout
    assert parameter_bytes(full / "final.h5") == parameter_bytes(split / "final.h5")
    assert series(full, "training loss") == series(split, "training loss")
    assert series(full, "learning rate") == series(split, "learning rate")


def test_occupied_output_is_refused_and_kept(runs):
    full = runs[0]
    before = {name: (full / name).read_bytes() for name in files_under(full)}
    proc = run("train.py", "--output", full, check=False)
    assert_one_line_error(proc, "already holds a run", "--resume", "new --output")
    assert {name: (full / name).read_bytes() for name in files_under(full)} == before


def test_resume_with_other_recipe_is_refused_and_config_kept(runs):
    config = (runs[1] / "config.yaml").read_bytes()
    proc = run("train.py", "--output", runs[1], "--resume", "--max-iter", 99, "--lr", 0.5,
               check=False)
    assert_one_line_error(proc, "--max-iter (60 -> 99)", "--lr (0.1 -> 0.5)")
    assert (runs[1] / "config.yaml").read_bytes() == config


def test_ctrl_c_checkpoints_and_resume_ends_bit_exactly(runs, tmp_path):
    """A real SIGINT in the middle of training: one line, exit 130, a checkpoint of the
    iteration it stopped at; --resume then ends where the uninterrupted run ends."""
    out = tmp_path / "run"
    proc = interrupt_script(SEG / "train.py", "--output", out, env=ENV,
                            ready=lambda _: bool(list((out / "checkpoints").glob("ckpt_*.npz"))))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and "continue with --resume" in last
    stopped = int(last.split()[3].rstrip(";,"))
    assert 10 <= stopped < smoke_config()["max_iter"]
    saved = checkpoint_steps(out)[-1]
    assert saved <= stopped and (saved == stopped or f"iteration {saved})" in last)
    resumed = run("train.py", "--output", out, "--resume")
    assert f"resumed at iteration {saved}" in resumed.stdout
    assert parameter_bytes(runs[0] / "final.h5") == parameter_bytes(out / "final.h5")
    assert series(runs[0], "training loss") == series(out, "training loss")


def test_diverging_loss_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = run("train.py", "--output", out, "--lr", 1e30, "--checkpoint-interval", 1,
               check=False)
    line = assert_one_line_error(proc, "training diverged at iteration", "is intact")
    diverged = int(line.split("iteration ")[1].split(":")[0])
    assert checkpoint_steps(out) and checkpoint_steps(out)[-1] == diverged - 1
    assert not (out / "final.h5").exists()


def test_data_parallel_wiring(tmp_path, monkeypatch):
    """train.py's main() as rank 0 and rank 1 of a faked 2-process MPI world: each rank
    loads its own half of every batch, gradients are all-reduced every iteration and only
    rank 0 writes."""
    data = synthetic.make_synthetic_cityscapes(tmp_path / "cs", 8, 2, 64, 128)
    batches = []

    class RecordingLoader(training.BatchLoader):
        def get_batch(self, epoch, batch_index):
            images, labels = super().get_batch(epoch, batch_index)
            part = slice(batch_index * self.batch_size, (batch_index + 1) * self.batch_size)
            batches.append((self.rank, epoch, self.indices(epoch)[part].tolist(),
                            images.shape[0]))
            return images, labels

    monkeypatch.setattr(training, "BatchLoader", RecordingLoader)
    steps = 2
    trained = [name for name in parameter_shapes(_smoke_network())
               if not name.endswith(BN_MEAN_VAR)]  # running statistics have no gradient
    outputs = {}
    for rank in (0, 1):
        comm = fake_world(monkeypatch, size=2, rank=rank)
        outputs[rank] = tmp_path / f"rank{rank}"
        argv = ["--config", CONFIGS / "train_smoke.yaml", "--no-synthetic", "--root", data,
                "--output", outputs[rank], "--max-iter", steps, "--loader-threads", 0]
        assert training.main([str(a) for a in argv]) == 0
        gradient_reductions = [c for c in comm.calls
                               if c[0] == "all_reduce" and c[1] == len(trained)]
        assert len(gradient_reductions) == steps
    by_rank = {rank: {epoch: indices for r, epoch, indices, n in batches if r == rank}
               for rank in (0, 1)}
    assert all(n == smoke_config()["batch_size"] // 2 for *_, n in batches)
    for epoch in range(steps):  # 8 images, 4 per rank: one batch per epoch
        assert not set(by_rank[0][epoch]) & set(by_rank[1][epoch])
        assert sorted(by_rank[0][epoch] + by_rank[1][epoch]) == list(range(8))
    assert {"config.yaml", "final.h5", "network_config.yaml"} <= set(files_under(outputs[0]))
    assert files_under(outputs[1]) == []


def _smoke_network():
    smoke = smoke_config()
    config = load_config(smoke["network_config"])
    for key in ("num_init_features", "num_layers", "n_blocks", "dens_k",
                "dense_n_out_layer_block", "intermediate_out_ch", "channels"):
        config["model"][key] = smoke[key]
    return load_config(config)


def test_backbone_weights_initialise_the_backbone(tmp_path):
    """A backbone file with names relative to 'backbone/' (as published) is loaded there."""
    shapes = parameter_shapes(_smoke_network())
    rng = np.random.default_rng(0)
    backbone = {k[len("backbone/"):]: rng.uniform(-1, 1, v).astype(np.float32)
                for k, v in shapes.items() if k.startswith("backbone/")}
    backbone["fc/affine/W"] = np.zeros((3, 4), np.float32)  # e.g. an ImageNet classifier
    path = tmp_path / "backbone.h5"
    write_param_file(path, backbone)
    out = tmp_path / "run"
    proc = run("train.py", "--output", out, "--backbone-weights", path, "--max-iter", 1,
               "--synthetic-images", 2, 1, "--batch-size", 2)
    assert "backbone initialised from" in proc.stdout
    init, _ = read_param_file(out / "model_param_00000000.h5")
    for name, value in backbone.items():
        if name.startswith("fc/"):
            assert "backbone/" + name not in init
            continue
        np.testing.assert_array_equal(init["backbone/" + name], value, err_msg=name)


def test_backbone_download_offline_is_one_line_error(tmp_path):
    env = {"NNABLA_RESEARCH_CACHE": str(tmp_path / "cache"),
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = run("train.py", "--output", tmp_path / "run", "--backbone-weights",
               "d3net-s-backbone", check=False, env=env)
    line = assert_one_line_error(proc, "--backbone-weights PATH")
    assert line.startswith("error: cannot download")
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dens_kk: [4, 4, 4, 4]\n")
    proc = run("train.py", "--output", tmp_path / "run", "--config", bad, check=False)
    assert_one_line_error(proc, "unknown key 'dens_kk'", "did you mean 'dens_k'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--batch-size", 0, "expected an integer >= 1"),
    ("--lr", "nan", "expected a number > 0"),
    ("--momentum", 1.5, "expected a number in [0, 1]"),
    ("--block-comp", 0, "expected a number in (0, 1]"),
    ("--synthetic-size", 8, "expected an integer >= 16")])
def test_numbers_out_of_range_are_one_line_errors(flag, value, expected, tmp_path):
    values = [value, value] if flag == "--synthetic-size" else [value]
    proc = run("train.py", "--output", tmp_path / "run", flag, *values, check=False)
    assert_one_line_error(proc, flag, expected)
    assert not (tmp_path / "run").exists()


def test_a_dataset_root_trains_the_paper_recipe(tmp_path):
    """train.py --root DIR (no --config) is the official D3Net-L recipe on real data: it
    asks for the Cityscapes files, not for synthetic ones, and writes nothing."""
    proc = run("train.py", "--output", tmp_path / "run", "--root", tmp_path / "nothing",
               check=False)
    assert_one_line_error(proc, "leftImg8bit")
    assert not (tmp_path / "run").exists()
    args = training.parse_args(["--output", "x", "--root", "/data/cityscapes"])
    recipe = yaml.safe_load((CONFIGS / "train_D3Net_L.yaml").read_text())
    assert args.network_config == "D3Net_L" and not args.synthetic
    assert {k: getattr(args, k) for k in recipe} == recipe | {"root": "/data/cityscapes"}
    smoke = training.parse_args(["--output", "x"])
    assert smoke.synthetic and smoke.max_iter == smoke_config()["max_iter"]
    # a root in the --config file counts too
    options = tmp_path / "options.yaml"
    options.write_text("root: /data/cityscapes\n")
    assert training.parse_args(["--output", "x", "--config", str(options)]).max_iter == 80000


def test_official_flags_and_flat_config_file(tmp_path):
    """The official spellings (-d is our --device-id, so --data-dir) and the official flat
    config files: the network from it, and its training values unless the command line or
    --config set them."""
    flat = tmp_path / "D3Net_S.yaml"  # the official layout: every key at the top level
    official = load_config("D3Net_S")
    flat.write_text(yaml.safe_dump({**official["model"], **official["train"],
                                    "mean": official["preprocess"]["mean"],
                                    "std": official["preprocess"]["std"],
                                    "palette": official["palette"],
                                    "max_iter": 500, "image_width": 768}))
    args = training.parse_args(["--data-dir", "/cs", "-cfg", str(flat), "-p", "bb.h5",
                                "-o", "run", "-c", "cpu", "-r"])
    assert (args.root, args.network_config, args.backbone_weights, args.output,
            args.context, args.recompute) == ("/cs", str(flat), "bb.h5", "run", "cpu", True)
    assert args.max_iter == 500 and args.crop_size == [512, 768]
    config, modified = training.network_config(args)
    assert config["model"] == official["model"] and config["name"] == "D3Net_S"
    assert not modified and training.backbone_source("auto", config, modified) == \
        "d3net-s-backbone"
    assert training.parse_args(["--root", "/cs", "-cfg", str(flat), "--output", "run",
                                "--max-iter", "7"]).max_iter == 7
    options = tmp_path / "options.yaml"
    options.write_text("max_iter: 9\n")
    assert training.parse_args(["--root", "/cs", "-cfg", str(flat), "--output", "run",
                                "--config", str(options)]).max_iter == 9
    # a network config from the options file only picks the network
    options.write_text(f"network_config: {flat}\n")
    assert training.parse_args(["--root", "/cs", "--output", "run", "--config",
                                str(options)]).max_iter == 80000


def test_missing_data_is_one_line_error(tmp_path):
    proc = run("train.py", "--output", tmp_path / "run", "--config",
               CONFIGS / "train_D3Net_S.yaml", "--root", tmp_path / "nothing",
               "--backbone-weights", "none", "--context", "cpu", check=False)
    assert_one_line_error(proc, "leftImg8bit")


def test_full_recipes_override_every_smoke_setting_and_match_official():
    from d3net_seg.training import backbone_source, build_parser, network_config

    smoke = smoke_config()
    for variant in ("S", "L"):
        path = CONFIGS / f"train_D3Net_{variant}.yaml"
        recipe = yaml.safe_load(path.read_text())
        assert set(smoke) <= set(recipe), set(smoke) - set(recipe)
        args = build_parser().parse_args(["--output", "x", "--config", str(path)])
        official = load_config(f"D3Net_{variant}")["train"]
        assert args.crop_size == [official["image_height"], official["image_width"]]
        for key in ("batch_size", "max_iter", "lr", "min_lr", "power", "momentum",
                    "weight_decay", "save_interval"):
            assert getattr(args, key) == official[key], key
        assert args.scale_range == [0.5, 2.0] and args.flip and args.photometric
        config, modified = network_config(args)
        assert not modified and config["model"] == load_config(f"D3Net_{variant}")["model"]
        assert backbone_source(args.backbone_weights, config, modified) == \
            f"d3net-{variant.lower()}-backbone"
        assert backbone_source("auto", config, True) is None  # modified network: no backbone


def test_training_batch_preprocessing_matches_inference():
    from d3net_seg.inference import normalize
    from d3net_seg.training import label_targets, normalize_batch

    pre = load_config("D3Net_S")["preprocess"]
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    x = normalize_batch(images, pre)
    for i in range(2):
        ref = normalize(images[i].transpose(1, 2, 0), pre["mean"], pre["std"], pre["to_rgb"])
        np.testing.assert_array_equal(x[i:i + 1], ref)
    t = label_targets(np.array([[[0, 18, 255]]], np.uint8), 19)
    assert t.shape == (1, 1, 1, 3) and t.ravel().tolist() == [0, 18, -1]
    with pytest.raises(UserError, match="id 19"):
        label_targets(np.array([[[19]]], np.uint8), 19)


# ---------------------------------------------------------------------------- evaluation
def test_miou_rises_after_training(evals):
    out, before, after = evals
    b = json.loads((out / "before" / "iou.json").read_text())
    a = json.loads((out / "after" / "iou.json").read_text())
    assert a["mIoU"] > b["mIoU"] + 0.2 and a["mIoU"] > 0.3, (b["mIoU"], a["mIoU"])
    assert a["pixel_accuracy"] > b["pixel_accuracy"]
    assert "mIoU" in after.stdout and "| 0 | road |" in after.stdout
    # the classes the synthetic data never contains and the model never predicts are NaN
    absent = [i for i, v in enumerate(a["iou"]) if v is None]
    assert all(a["union"][i] == 0 for i in absent)
    ids = {i for i, name in enumerate(a["classes"]) if name in synthetic.SYNTHETIC_CLASSES}
    assert all(a["union"][i] > 0 for i in ids)


def test_eval_writes_tables_summed_over_the_split(evals, runs):
    out, _, _ = evals
    data = runs[0] / "synthetic-cityscapes"
    rows = (out / "after" / "iou.csv").read_text().splitlines()
    assert rows[0] == "train_id,class,iou,accuracy,intersection,union" and len(rows) == 21
    assert rows[-1].startswith(",mean,")
    assert "**mIoU" in (out / "after" / "iou.md").read_text()
    result = json.loads((out / "after" / "iou.json").read_text())
    # recompute from the saved predictions: one confusion matrix over all images
    cm = ConfusionMatrix()
    pairs = list_pairs(data, "val")
    for img_path, lbl_path in pairs:
        name = img_path.name[:-len("_leftImg8bit.png")]
        pred = np.asarray(Image.open(out / "after" / "predictions" / img_path.parent.name
                                     / f"{name}_labels.png"))
        cm.update(pred, np.asarray(Image.open(lbl_path)))
    assert cm.matrix.tolist() == result["confusion_matrix"]
    assert result["pixels"] == sum(int((np.asarray(Image.open(lbl)) != 255).sum())
                                   for _, lbl in pairs)
    assert result["mIoU"] == pytest.approx(cm.miou())


def test_eval_limit_and_errors(runs, tmp_path):
    full = runs[0]
    data = full / "synthetic-cityscapes"
    run("eval.py", "--model", full / "final.h5", "--root", data, "--out-dir", tmp_path / "one",
        "--limit", 1)
    first = list_pairs(data, "val")[0][1]
    pixels = int((np.asarray(Image.open(first)) != 255).sum())
    assert json.loads((tmp_path / "one" / "iou.json").read_text())["pixels"] == pixels
    proc = run("eval.py", "--model", full / "final.h5", "--root", tmp_path / "none",
               "--out-dir", tmp_path / "e", check=False)
    assert_one_line_error(proc, "leftImg8bit")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    proc = run("eval.py", "--model", junk, "--root", data, "--out-dir", tmp_path / "e",
               check=False)
    assert_one_line_error(proc, "junk.h5")
    assert not (tmp_path / "e").exists()


def test_eval_rerun_with_another_model_is_refused(evals, runs):
    """A result folder names the model and settings of its scores: the same evaluation may
    run again, another model (or split, or limit) never reports into it."""
    out = evals[0] / "before"
    scores = (out / "iou.json").read_bytes()
    data = runs[0] / "synthetic-cityscapes"
    proc = run("eval.py", "--model", runs[0] / "final.h5", "--root", data, "--out-dir", out,
               check=False)
    assert_one_line_error(proc, "holds scores of another evaluation", "model")
    proc = run("eval.py", "--model", runs[0] / "model_param_00000000.h5", "--root", data,
               "--out-dir", out, "--limit", 1, check=False)
    assert_one_line_error(proc, "limit")
    assert (out / "iou.json").read_bytes() == scores
    record = json.loads((out / "evaluation.json").read_text())
    assert record["split"] == "val" and record["network"]["dens_k"] == [8, 8, 8, 8]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _shrink(path):
    with Image.open(path) as im:
        im.resize((im.width // 2, im.height // 2)).save(path)


def _colour(path):
    with Image.open(path) as im:
        im.convert("RGB").save(path)


@pytest.mark.parametrize("damage, which, fragment", [
    (_truncate, "image", "cannot read this image"),
    (_truncate, "label", "cannot read this label image"),
    (_shrink, "label", "label of 128x64 pixels"),
    (_colour, "label", "label image of mode RGB")])
def test_eval_corrupt_dataset_file_is_one_line_naming_it(damage, which, fragment, runs,
                                                         tmp_path):
    data = tmp_path / "cs"
    shutil.copytree(runs[0] / "synthetic-cityscapes", data)
    image, label = list_pairs(data, "val")[1]
    bad = image if which == "image" else label
    damage(bad)
    out = tmp_path / "eval"
    proc = run("eval.py", "--model", runs[0] / "final.h5", "--root", data, "--out-dir", out,
               check=False)
    assert_one_line_error(proc, str(bad), fragment)
    assert not out.exists()


# ---------------------------------------------------------------------------- synthetic data
def test_synthetic_set_is_in_the_real_cityscapes_layout(tmp_path):
    root = synthetic.make_synthetic_cityscapes(tmp_path / "cs", n_train=3, n_val=2, height=32,
                                               width=64, seed=1)
    assert synthetic.is_synthetic(root)
    pairs = list_pairs(root, "train")
    assert len(pairs) == 3 and len(list_pairs(root, "val")) == 2
    img, lbl = pairs[0]
    assert img.relative_to(root).parts[:2] == ("leftImg8bit", "train")
    assert img.name.endswith("_leftImg8bit.png") and img.name.count("_") == 3
    assert lbl.relative_to(root).parts[:2] == ("gtFine", "train")
    ids = lbl.with_name(lbl.name.replace("labelTrainIds", "labelIds"))
    train_ids = np.asarray(Image.open(lbl))
    assert np.array_equal(label_ids_to_train_ids(np.asarray(Image.open(ids))), train_ids)
    x, y = Cityscapes(root, "train")[0]
    assert x.shape == (3, 32, 64) and y.shape == (32, 64)
    assert (y == 255).any() and len(np.unique(y)) >= 5
    # deterministic, and the second call keeps the files
    again = synthetic.make_synthetic_cityscapes(tmp_path / "cs2", 3, 2, 32, 64, seed=1)
    for (a, _), (b, _) in zip(pairs, list_pairs(again, "train")):
        assert a.read_bytes() == b.read_bytes()
    mtime = img.stat().st_mtime_ns
    synthetic.make_synthetic_cityscapes(root, 3, 2, 32, 64, seed=1)
    assert img.stat().st_mtime_ns == mtime
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(UserError, match="not a synthetic"):
        synthetic.make_synthetic_cityscapes(tmp_path / "other")


def test_model_accepts_the_smoke_config_dict():
    """The tiny network of the smoke run is D3NetSegmentation built from a config dict."""
    model = D3NetSegmentation(_smoke_network())
    assert len(model.parameter_shapes()) < len(parameter_shapes(load_config("D3Net_S"))) / 5


def test_eval_full_size_network_from_official_parameter_file(seg_set, tmp_path):
    """eval.py on a parity fixture's official-name D3Net file (network detected from the
    shapes, no --network-config): its predictions are the Segmenter's argmax labels."""
    fx = seg_set
    data = synthetic.make_synthetic_cityscapes(tmp_path / "cs", n_train=1, n_val=1, height=64,
                                               width=128)
    out = tmp_path / "eval"
    run("eval.py", "--model", fx.h5, "--root", data, "--out-dir", out, "--save-predictions")
    result = json.loads((out / "iou.json").read_text())
    assert result["config"] == fx.name and len(result["iou"]) == 19
    (img_path, lbl_path), = list_pairs(data, "val")
    image = np.asarray(Image.open(img_path).convert("RGB"))
    name = img_path.name[:-len("_leftImg8bit.png")]
    pred = np.asarray(Image.open(out / "predictions" / img_path.parent.name
                                 / f"{name}_labels.png"))
    assert np.array_equal(pred, fx.segmenter.segment(image).labels)
    cm = ConfusionMatrix().update(pred, np.asarray(Image.open(lbl_path)))
    assert result["confusion_matrix"] == cm.matrix.tolist()
