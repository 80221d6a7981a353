"""X-UMX training losses as nnabla graphs: the multi-domain combination losses.

Both losses evaluate every proper non-empty combination of the sources (for the four
MUSDB18 sources: 4 singles + 6 pairs + 4 triples = 14), where a combination's estimate and
reference are the sums over its sources, and average over the combinations.

* :func:`mse_combination_loss` (frequency domain): for each combination, the mean squared
  error between ``(sum of masks) * mixture magnitude`` and the sum of the target magnitudes.
* :func:`sdr_combination_loss` (time domain): ``1 +`` the mean weighted-SDR cost
  ``-a * cos(est, ref) - (1 - a) * cos(mix - est, mix - ref)`` with
  ``a = |ref|^2 / (|ref|^2 + |mix - ref|^2)``, per combination, batch item and channel,
  after trimming ``trim`` (200) samples at both ends; mixture and references are first cut
  to the estimates' length.

Layouts are the official ones: spectrograms ``(frames, batch, channels, bins)`` with the
source axis folded into channels (source major: bass L/R, drums L/R, ...); time-domain
estimates ``(sources, batch, channels, samples)``, references ``(batch, sources * channels,
samples)``, mixture ``(batch, channels, samples)``. The channel count is taken from the
mixture (the official code assumes 2).
"""
import itertools


def source_combinations(nb_sources=4):
    """Proper non-empty subsets of ``range(nb_sources)``, by size then lexicographically
    (the official order: (0,), ..., (0, 1), (0, 2), ..., (1, 2, 3))."""
    return [c for k in range(1, nb_sources)
            for c in itertools.combinations(range(nb_sources), k)]


def _sum(xs):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def mse_combination_loss(mix_spec, m_hat, gt_spec):
    """Multi-domain MSE-combination loss (nnabla variables).

    ``mix_spec`` ``(frames, batch, C, bins)``; ``m_hat`` and ``gt_spec``
    ``(frames, batch, S * C, bins)``. Returns a scalar variable."""
    import nnabla.functions as F

    if tuple(m_hat.shape) != tuple(gt_spec.shape):
        raise ValueError(f"mask shape {m_hat.shape} != target shape {gt_spec.shape}")
    channels = mix_spec.shape[-2]
    nb_src = m_hat.shape[-2] // channels
    masks = [m_hat[..., s * channels:(s + 1) * channels, :] for s in range(nb_src)]
    gts = [gt_spec[..., s * channels:(s + 1) * channels, :] for s in range(nb_src)]
    losses = []
    for combi in source_combinations(nb_src):
        est = _sum([masks[s] for s in combi]) * mix_spec
        ref = _sum([gts[s] for s in combi])
        losses.append(F.mean(F.squared_error(est, ref)))
    return _sum(losses) / float(len(losses))


def sdr_combination_loss(mix, pred, gt_time, trim=200, weighted=True):
    """SDR-combination loss (nnabla variables): ``1 + mean weighted-SDR cost``.

    ``mix`` ``(batch, C, T')``, ``pred`` ``(S, batch, C, T)``, ``gt_time``
    ``(batch, S * C, T')`` with ``T' >= T``. Returns a scalar variable."""
    import nnabla.functions as F

    nb_src, batch, channels, length = pred.shape
    rows = batch * channels
    mix = F.reshape(mix[..., :length], (rows, length))
    gts = [F.reshape(gt_time[:, s * channels:(s + 1) * channels, :length], (rows, length))
           for s in range(nb_src)]
    preds = [F.reshape(pred[s], (rows, length)) for s in range(nb_src)]
    combis = source_combinations(nb_src)
    ref = F.concatenate(*[_sum([gts[s] for s in c]) for c in combis], axis=0)
    est = F.concatenate(*[_sum([preds[s] for s in c]) for c in combis], axis=0)
    mix = F.tile(mix, (len(combis), 1))
    return 1.0 + weighted_sdr_cost(est, ref, mix, trim=trim, weighted=weighted)


def weighted_sdr_cost(est, ref, mix, trim=200, weighted=True):
    """Mean over rows of ``-a * cos(est, ref) - (1 - a) * cos(mix - est, mix - ref)`` for
    ``(rows, samples)`` variables, after dropping ``trim`` samples at both ends; ``a`` is
    the reference's energy share (``weighted``) or 0.5."""
    import nnabla.functions as F

    if trim:
        est, ref, mix = est[:, trim:-trim], ref[:, trim:-trim], mix[:, trim:-trim]
    noise = mix - ref
    noise_hat = mix - est

    def energy(x):
        return F.sum(x * x, 1, keepdims=True)

    def cosine(a, b):
        num = F.sum(a * b, 1, keepdims=True)
        den = ((1e-10 + energy(a)) ** 0.5) * ((1e-10 + energy(b)) ** 0.5)
        return num / (den + 1e-10)

    if weighted:
        alpha = energy(ref) / (energy(ref) + energy(noise) + 1e-10)
    else:
        alpha = 0.5
    return F.mean(-alpha * cosine(est, ref) - (1.0 - alpha) * cosine(noise_hat, noise))
