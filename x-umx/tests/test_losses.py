"""X-UMX training losses against the official values in ``xumx_losses.npz``.

All shapes come from the file (``mix_spec`` (frames, batch, C, bins), ``m_hat``/``gt_spec``
(frames, batch, S * C, bins), ``mix_t`` (batch, C, T), ``pred_t`` (S, batch, C, T), ``gt_t``
(batch, S * C, T)).
"""
import numpy as np

from xumx.loss import mse_combination_loss, sdr_combination_loss, source_combinations

RTOL = 1e-5


def _var(x):
    import nnabla as nn

    return nn.Variable.from_numpy_array(np.ascontiguousarray(x, dtype=np.float32))


def _eval(y):
    y.forward()
    return float(y.d)


def test_mse_combination_loss(fx):
    d = fx.losses
    got = _eval(mse_combination_loss(_var(d["mix_spec"]), _var(d["m_hat"]), _var(d["gt_spec"])))
    ref = float(d["mse_loss"])
    print(f"mse loss: ours {got!r}, official {ref!r}, rel {abs(got - ref) / abs(ref):.3g}")
    assert abs(got - ref) <= RTOL * abs(ref)


def test_sdr_combination_loss(fx):
    d = fx.losses
    got = _eval(sdr_combination_loss(_var(d["mix_t"]), _var(d["pred_t"]), _var(d["gt_t"])))
    ref = float(d["sdr_loss"])
    print(f"sdr loss: ours {got!r}, official {ref!r}, rel {abs(got - ref) / abs(ref):.3g}")
    assert abs(got - ref) <= RTOL * abs(ref)


def test_losses_vanish_for_perfect_estimates(fx):
    d = fx.losses
    mix_spec, gt_spec = d["mix_spec"], d["gt_spec"]
    channels = mix_spec.shape[2]
    nb_src = gt_spec.shape[2] // channels
    assert len(source_combinations(nb_src)) == 2 ** nb_src - 2
    perfect_masks = gt_spec / np.tile(mix_spec, (1, 1, nb_src, 1))
    mse = _eval(mse_combination_loss(_var(mix_spec), _var(perfect_masks), _var(gt_spec)))
    assert mse <= 1e-10
    gt_t = d["gt_t"]
    batch, _, length = gt_t.shape
    pred = gt_t.reshape(batch, nb_src, channels, length).transpose(1, 0, 2, 3)
    mix_t = pred.sum(axis=0)
    sdr = _eval(sdr_combination_loss(_var(mix_t), _var(pred), _var(gt_t)))
    assert abs(sdr) <= 1e-5


def test_sdr_loss_ignores_trimmed_edges(fx):
    d = fx.losses
    pred = d["pred_t"].copy()
    base = _eval(sdr_combination_loss(_var(d["mix_t"]), _var(pred), _var(d["gt_t"])))
    pred[..., :200] += 5.0
    pred[..., -200:] -= 5.0
    edge = _eval(sdr_combination_loss(_var(d["mix_t"]), _var(pred), _var(d["gt_t"])))
    assert edge == base
    pred[..., 200:260] += 5.0
    inner = _eval(sdr_combination_loss(_var(d["mix_t"]), _var(pred), _var(d["gt_t"])))
    assert inner != base
