"""The ``separate.py --report`` page: for one input, a spectrogram and an audio player for the
mixture and for every estimate, in one self-contained HTML file
(:class:`common.report.HtmlReport`: the images and the MP3 audio are data URIs, so the page
can be moved, mailed or opened offline)."""
import numpy as np

from common.report import HtmlReport

__all__ = ["separation_report", "spectrogram_figure"]

# A 96 kbit/s MP3 per player keeps the page of a 4-minute song with five players near 15 MB
# (base64 included) while sounding close enough to judge a separation.
REPORT_BITRATE = "96k"


def spectrogram_figure(audio, sample_rate, title):
    """A matplotlib figure of the log-magnitude spectrogram (dB, channels averaged) of
    ``(samples, channels)`` ``audio``; a 2048-point STFT (shorter for short clips)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mono = np.asarray(audio, dtype=np.float64).mean(axis=1)
    n_fft = int(min(2048, 2 ** np.floor(np.log2(max(len(mono), 16)))))
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    # Silence would make log10(0) = -inf: a floor 120 dB below full scale keeps the image valid.
    ax.specgram(mono + 1e-6, NFFT=n_fft, Fs=sample_rate, noverlap=n_fft // 2, cmap="magma",
                vmin=-120)
    ax.set_title(title)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    fig.tight_layout()
    return fig


def separation_report(name, mixture, estimates, sample_rate):
    """The report of one separated input (an :class:`HtmlReport`; ``write(path)`` stores
    it). ``name``: the input's file name; ``mixture``: the input ``(samples, channels)``;
    ``estimates``: ``{target: (samples, channels)}`` as written, at ``sample_rate``."""
    import matplotlib.pyplot as plt

    mixture = np.asarray(mixture, dtype=np.float32)
    page = HtmlReport(f"Separation of {name}")
    page.table(["input", "duration (s)", "sample rate (Hz)", "channels", "estimates"],
               [[name, round(mixture.shape[0] / sample_rate, 2), sample_rate,
                 mixture.shape[1], ", ".join(estimates)]])
    for label, audio in [("mixture", mixture), *estimates.items()]:
        page.heading(label)
        fig = spectrogram_figure(audio, sample_rate, label)
        page.image(fig, caption=f"{label}: spectrogram")
        plt.close(fig)
        page.audio(audio, sample_rate, caption=label, bitrate=REPORT_BITRATE)
    return page
