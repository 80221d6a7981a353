"""What ``infer.py`` writes besides the trainId labels, through the real script: the
Cityscapes labelId PNG (checked against the official id table), the overlay's class legend
(a swatch of every present class and of no other), folder input (every image under a folder,
subfolders mirrored, other files named on stderr, a bad image refused in one line), the
published-name loading of :meth:`Segmenter.from_pretrained`, and the demo figure's titles and
legend."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.dev.testing import assert_one_line_error, run_script
from d3net_seg import Segmenter, palette
from d3net_seg.inference import read_image

INFER = Path(__file__).resolve().parents[1] / "infer.py"

# trainId -> labelId of the 19 Cityscapes training classes, from the official table
# (cityscapesScripts helpers/labels.py): road 7, sidewalk 8, building 11, ..., bicycle 33.
OFFICIAL_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def scene(path, height, width, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 4, yy * 6, 255 - xx * 3], axis=-1)
    img = np.clip(base + rng.integers(-60, 61, (height, width, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def infer(*args, env=None):
    return run_script(INFER, *args, check=False, env=env)


def legend_colours(figure, top):
    """Colours of the solid swatches (SWATCH x SWATCH blocks of one colour) below row
    ``top``; text and background never form such a block except in white."""
    region = figure[top:].astype(int)
    n = palette.SWATCH
    found = set()
    for colour in np.unique(region.reshape(-1, 3), axis=0):
        mask = np.all(region == colour, axis=-1).astype(int)
        sums = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        blocks = sums[n:, n:] - sums[:-n, n:] - sums[n:, :-n] + sums[:-n, :-n]
        if (blocks == n * n).any():
            found.add(tuple(int(v) for v in colour))
    return found - {palette.BACKGROUND}


def test_label_ids_follow_the_cityscapes_table(tmp_path):
    """Every trainId (and 255 = ignore) becomes its official labelId (ignore -> 0)."""
    train_ids = np.array([list(range(19)) + [255]], dtype=np.uint8)
    path = palette.save_label_ids(tmp_path / "ids.png", train_ids)
    with Image.open(path) as im:
        ids = np.asarray(im)
    assert ids.tolist() == [OFFICIAL_LABEL_IDS + [0]]


def test_outputs_labelids_and_legend(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    image = scene(tmp_path / "street.png", 70, 90, seed=1)
    out = tmp_path / "out"
    r = infer(image, "--model", weights, "--network-config", cfg, "--out-dir", out)
    assert r.returncode == 0, r.stderr
    with Image.open(out / "street_labels.png") as im:
        train_ids = np.asarray(im)
    with Image.open(out / "street_labelIds.png") as im:
        label_ids = np.asarray(im)
    with Image.open(out / "street_overlay.png") as im:
        overlay = np.asarray(im.convert("RGB"))
    present = np.unique(train_ids)
    assert len(present) >= 2, "the test image should show several classes"
    assert np.array_equal(label_ids, np.take(OFFICIAL_LABEL_IDS, train_ids))
    # the legend: a swatch in the colour of every class present, none of any other class
    assert overlay.shape[0] > 70
    config_palette = Segmenter(weights, cfg).palette
    assert legend_colours(overlay, 70) == {tuple(int(v) for v in config_palette[c])
                                           for c in present}
    assert np.array_equal(overlay[:70, :90],
                          palette.overlay(read_image(image), train_ids, config_palette))


def test_legend_lists_every_class_it_is_given():
    """19 classes on a narrow image: the legend wraps and widens, every swatch is drawn."""
    classes = palette.present_classes(np.arange(19), palette.class_names(19),
                                      palette.PALETTE)
    assert [name for _, name, _ in classes][:3] == ["road", "sidewalk", "building"]
    figure = palette.with_legend(np.zeros((30, 30, 3), np.uint8), classes)
    assert figure.shape[1] >= 30
    assert legend_colours(figure, 30) == {tuple(int(v) for v in c) for c in palette.PALETTE}


def test_folder_input_processes_every_image(tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    photos = tmp_path / "photos"
    images = [scene(photos / "a.png", 40, 50, 2), scene(photos / "b.jpg", 45, 33, 3),
              scene(photos / "city" / "c.png", 36, 48, 4)]
    (photos / "notes.txt").write_text("not an image\n")
    out = photos / "segmented"  # inside the input folder: earlier results are not inputs
    args = [photos, "--model", weights, "--network-config", cfg, "--out-dir", out]
    for run in range(2):  # the second run finds the first one's results in the folder
        r = infer(*args)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.strip().splitlines()) == len(images)
        assert "notes.txt" in r.stderr
        assert ("output folder" in r.stderr) == (run == 1), r.stderr
    for path in images:
        sub = path.parent.relative_to(photos)
        h, w = read_image(path).shape[:2]
        for suffix in palette_suffixes():
            with Image.open(out / sub / f"{path.stem}{suffix}") as im:
                assert im.size[0] >= w and (im.size[1] > h if "overlay" in suffix
                                            else im.size == (w, h))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert len(written) == 3 * len(images), written


def palette_suffixes():
    from d3net_seg.inference import OUTPUT_SUFFIXES

    return OUTPUT_SUFFIXES


@pytest.mark.parametrize("problem", ["corrupt image", "no images"])
def test_folder_with_a_bad_image_or_none_is_refused(problem, tiny_model, tmp_path):
    weights, cfg, _ = tiny_model
    photos = tmp_path / "photos"
    scene(photos / "good.png", 40, 50, 5)
    if problem == "corrupt image":
        bad = photos / "sub" / "broken.png"
        bad.parent.mkdir()
        bad.write_bytes(b"\x89PNG not really")
        expected = str(bad)
    else:
        photos = tmp_path / "empty"
        photos.mkdir()
        (photos / "readme.md").write_text("x")
        expected = "no image files"
    out = tmp_path / "out"
    r = infer(photos, "--model", weights, "--network-config", cfg, "--out-dir", out)
    assert_one_line_error(r, expected)
    assert not out.exists()


def test_from_pretrained_by_name_uses_the_cache(tiny_model, tmp_path, monkeypatch):
    """A published name resolves through the weights cache (a fixture file stands in for the
    download); a path works too; anything else is one UserError naming the choices."""
    from common.errors import UserError

    weights, cfg, _ = tiny_model
    monkeypatch.setenv("NNABLA_RESEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    (tmp_path / "cache" / "weights" / "D3Net-S.h5").write_bytes(weights.read_bytes())
    image = read_image(scene(tmp_path / "x.png", 40, 40, 6))
    by_path = Segmenter.from_pretrained(weights, config=cfg).segment(image).labels
    by_name = Segmenter.from_pretrained("d3net-s", config=cfg).segment(image).labels
    assert np.array_equal(by_path, by_name)
    with pytest.raises(UserError, match="d3net-s, d3net-l"):
        Segmenter.from_pretrained(tmp_path / "missing.h5")


def test_demo_figure_has_titles_and_legend(tiny_model, tmp_path):
    import shutil

    from d3net_seg.demo import _overlay_figure
    from d3net_seg.model import RUN_CONFIG
    from d3net_seg.synthetic import make_synthetic_cityscapes

    weights, cfg, _ = tiny_model
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(weights, run / "final.h5")
    shutil.copy(cfg, run / RUN_CONFIG)
    data = make_synthetic_cityscapes(tmp_path / "data", n_train=1, n_val=1, height=64,
                                     width=96)
    with Image.open(_overlay_figure(run, data, tmp_path / "fig.png")) as im:
        figure = np.asarray(im.convert("RGB"))
    # three 96-pixel panels with gaps; a title row above, a legend below
    assert figure.shape[1] >= 3 * 96 and figure.shape[0] > 64 + palette.ROW_HEIGHT
    title = figure[:palette.ROW_HEIGHT, :96]
    assert (title < 128).any(), "no title text above the first panel"
    legend = legend_colours(figure, palette.ROW_HEIGHT + 64)
    assert legend and legend <= {tuple(int(v) for v in c) for c in palette.PALETTE}
