"""The peer for bench_separation.py: open-unmix (PyTorch) UMX separating one input.

Runs in the peer environment (``.venv-peer``, made by ``peer_env.sh``; it has torch, numpy
and openunmix only), started by bench_separation.py's ``peer-umx`` variant, which times the
whole process. Usage::

    .venv-peer/bin/python x-umx/bench/peer_umx.py AUDIO.npy OUT.npy RESULT.json --threads 2

The model is the one open-unmix users pick: UMX with four targets (bass, drums, vocals, other),
hidden size 512, 3-layer bidirectional LSTM, n_fft 4096, hop 1024, max_bin 1487 (16 kHz),
stereo, one Wiener EM iteration; random weights (torch's default initialisation, fixed seed),
since nothing is downloaded. ``AUDIO.npy`` is float32 (samples, 2) at 44.1 kHz; the estimates
are written as one float32 array (targets, samples, 2) to ``OUT.npy`` (the peer environment
has no WAV writer: torchaudio is not installed), and ``RESULT.json`` gets the in-process times.
"""
import argparse
import json
import sys
import time
import types

# openunmix imports torchaudio at module level, but the path timed here (torch STFT, the
# networks, the Wiener EM in torch, torch iSTFT) never calls it, and no torchaudio build
# loads with torch 2.13 (see peer_env.sh): an empty module stands in for it.
sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from openunmix.model import OpenUnmix, Separator  # noqa: E402

TARGETS = ("bass", "drums", "vocals", "other")
SAMPLE_RATE = 44100
N_FFT, N_HOP, MAX_BIN = 4096, 1024, 1487


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio")
    ap.add_argument("out")
    ap.add_argument("result")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden-size", type=int, default=512)
    ap.add_argument("--niter", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    models = {t: OpenUnmix(nb_bins=N_FFT // 2 + 1, nb_channels=2, hidden_size=args.hidden_size,
                           nb_layers=3, unidirectional=False, max_bin=MAX_BIN)
              for t in TARGETS}
    separator = Separator(models, niter=args.niter, softmask=False, residual=False,
                          sample_rate=SAMPLE_RATE, n_fft=N_FFT, n_hop=N_HOP, nb_channels=2)
    separator.freeze()
    nb_params = sum(p.numel() for p in separator.parameters())
    t_setup = time.perf_counter() - t0

    audio = np.load(args.audio)
    t1 = time.perf_counter()
    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(audio.T))[None]  # (1, channels, samples)
        estimates = separator(x)[0]  # (targets, channels, samples)
    t_sep = time.perf_counter() - t1
    out = estimates.numpy().transpose(0, 2, 1).astype(np.float32)
    np.save(args.out, out)
    with open(args.result, "w") as fh:
        json.dump({"setup_s": t_setup, "separate_s": t_sep, "nb_params": int(nb_params),
                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                   "out_shape": list(out.shape)}, fh)


if __name__ == "__main__":
    main()
