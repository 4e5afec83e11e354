"""Audio input: loading, Whisper log-mel features, fragments and noise perturbation.

Everything here is numpy (float64 internally, float32 out) and runs on the host before
the compiled forward. Waveforms are mono float32 arrays at 16 kHz.

`log_mel` reproduces transformers' `WhisperFeatureExtractor` as Qwen2-Audio's processor
calls it (`padding="max_length"`, `return_attention_mask=True`): zero-pad or truncate to
a 30 s window, STFT (n_fft 400, hop 160, periodic Hann, centred with reflect padding),
power spectrum with the last frame dropped, slaney mel bank 0-8000 Hz,
`log10(max(x, 1e-10))`, clamp to `max - 8` over the whole window, `(x + 4) / 4`. The
mask has `ceil(n / 160)` leading ones.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
  "SAMPLING_RATE", "HOP_LENGTH", "N_FFT", "N_MELS", "N_FRAMES", "N_SAMPLES",
  "MIN_FRAGMENT_SAMPLES", "FRAGMENT_COUNTS",
  "AudioError", "AudioTooShortError", "AudioTruncatedWarning",
  "load_audio", "log_mel", "log_mel_batch", "fragments", "all_fragments", "perturb",
]

SAMPLING_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
N_MELS = 128
N_FRAMES = 3000  # 30 s
N_SAMPLES = N_FRAMES * HOP_LENGTH
MIN_FRAGMENT_SAMPLES = 1600  # 0.1 s
FRAGMENT_COUNTS = (2, 3, 4, 5)


class AudioError(ValueError):
  """Audio that cannot be read or used; the message names the file or item."""


class AudioTooShortError(AudioError):
  """Audio too short to split into the requested fragments."""


class AudioTruncatedWarning(UserWarning):
  """Audio longer than the feature window was truncated."""


def _label(name) -> str:
  return "audio" if name is None else str(name)


def load_audio(path: str | os.PathLike, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
  """Reads any file librosa reads (wav, flac, ogg, mp3, ...) as mono audio.

  Same result as `librosa.load(path, sr=sampling_rate)`: soundfile decodes (audioread
  is the fallback), channels are averaged, then soxr_hq resamples.

  Args:
    path: the audio file.
    sampling_rate: target rate in Hz.
  Returns:
    [n] float32 waveform at `sampling_rate`, n > 0.
  Raises:
    AudioError: missing, unreadable, empty or non-finite audio (the message names the file).
  """
  import librosa
  import soundfile

  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"audio file not found: {path}")
  if os.path.isdir(path):
    raise AudioError(f"audio path is a directory, not a file: {path}")
  if os.path.getsize(path) == 0:
    raise AudioError(f"audio file is empty (0 bytes): {path}")
  try:
    data, native_rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = librosa.to_mono(data.T)
  except Exception as sf_error:
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, FutureWarning, DeprecationWarning))
        waveform, native_rate = librosa.load(path, sr=None, mono=True)
    except Exception as e:
      fallback = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
      raise AudioError(f"cannot read audio file {path}: {sf_error} (audioread fallback: {fallback})"
                       ) from sf_error
  if waveform.size == 0:
    raise AudioError(f"audio file has no samples: {path}")
  if native_rate != sampling_rate:
    waveform = librosa.resample(waveform, orig_sr=native_rate, target_sr=sampling_rate)
  if not np.all(np.isfinite(waveform)):
    raise AudioError(f"audio file has non-finite samples (NaN/inf): {path}")
  return np.ascontiguousarray(waveform, dtype=np.float32)


def _as_waveform(waveform, name) -> np.ndarray:
  """Validated [n] float32 mono waveform (no copy when it already is one)."""
  x = np.asarray(waveform)
  if x.ndim != 1:
    raise AudioError(
        f"{_label(name)}: expected a mono 1-D waveform, got shape {x.shape}; "
        "average the channels first (load_audio does)")
  if x.size == 0:
    raise AudioError(f"{_label(name)}: waveform has no samples")
  if not np.issubdtype(x.dtype, np.floating):
    raise AudioError(
        f"{_label(name)}: expected a float waveform in [-1, 1], got dtype {x.dtype} "
        "(scale integer PCM first, e.g. int16 / 32768)")
  x = x.astype(np.float32, copy=False)
  if not np.all(np.isfinite(x)):
    raise AudioError(f"{_label(name)}: waveform has non-finite samples (NaN/inf)")
  return x


@functools.lru_cache(maxsize=None)
def _mel_filters(n_mels: int) -> np.ndarray:
  """[n_mels, N_FFT // 2 + 1] slaney mel bank, 0-8000 Hz (bit-exact with HF's)."""
  import librosa

  bank = librosa.filters.mel(sr=SAMPLING_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=0.0,
                             fmax=SAMPLING_RATE / 2, htk=False, norm="slaney", dtype=np.float64)
  bank.setflags(write=False)
  return bank


@functools.lru_cache(maxsize=None)
def _hann() -> np.ndarray:
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic
  window.setflags(write=False)
  return window


def log_mel(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE, *, name: str | None = None,
            n_frames: int = N_FRAMES, n_mels: int = N_MELS) -> tuple[np.ndarray, np.ndarray]:
  """Whisper log-mel features of one waveform, as Qwen2-Audio's processor computes them.

  The waveform is cast to float32 first (as the HF processor does), then processed in
  float64. Audio longer than the window is truncated with an `AudioTruncatedWarning`.

  Args:
    waveform: [n] mono waveform at 16 kHz, n > 0.
    sampling_rate: must be 16000; anything else is an error (resample or use load_audio).
    name: names the file/item in errors and warnings.
    n_frames: window length in frames (n_frames * 160 samples); 3000 = 30 s matches HF.
    n_mels: mel bins (128 for Qwen2-Audio / Whisper-v3, 80 for older Whisper).
  Returns:
    input_features: [n_mels, n_frames] float32.
    feature_attention_mask: [n_frames] int32, the first ceil(min(n, window) / 160) are 1.
  """
  if sampling_rate != SAMPLING_RATE:
    raise AudioError(
        f"{_label(name)}: log_mel needs {SAMPLING_RATE} Hz audio, got sampling_rate={sampling_rate}; "
        f"resample it first (librosa.resample(y, orig_sr={sampling_rate}, target_sr={SAMPLING_RATE})) "
        "or read the file with load_audio(path), which resamples to 16 kHz")
  if n_frames < 1 or n_mels < 1:
    raise ValueError(f"n_frames and n_mels must be positive, got {n_frames} and {n_mels}")
  x = _as_waveform(waveform, name)
  window_samples = n_frames * HOP_LENGTH
  if x.size > window_samples:
    warnings.warn(
        f"{_label(name)}: {x.size / SAMPLING_RATE:.2f} s of audio ({x.size} samples) is longer than "
        f"the {window_samples / SAMPLING_RATE:g} s feature window; truncated to the first "
        f"{window_samples / SAMPLING_RATE:g} s as the HF processor does",
        AudioTruncatedWarning, stacklevel=2)
    x = x[:window_samples]
  n_valid = x.size

  body = np.zeros(window_samples, np.float64)
  body[:n_valid] = x
  padded = np.pad(body, N_FFT // 2, mode="reflect")  # centred frames
  frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:n_frames]
  power = np.abs(np.fft.rfft(frames * _hann(), axis=-1)) ** 2  # [n_frames, N_FFT // 2 + 1]
  mel = _mel_filters(n_mels) @ power.T
  log_spec = np.log10(np.maximum(mel, 1e-10))
  log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
  features = ((log_spec + 4.0) / 4.0).astype(np.float32)

  mask = np.zeros(n_frames, np.int32)
  mask[:math.ceil(n_valid / HOP_LENGTH)] = 1
  return features, mask


def log_mel_batch(waveforms: Sequence[np.ndarray], sampling_rate: int = SAMPLING_RATE, *,
                  names: Sequence[str] | None = None, n_frames: int = N_FRAMES,
                  n_mels: int = N_MELS) -> tuple[np.ndarray, np.ndarray]:
  """`log_mel` of each waveform, stacked (each normalised on its own, as HF does).

  Args:
    waveforms: B mono waveforms of any lengths (a list, or a [B, n] array).
    names: optional B names for errors and warnings.
  Returns:
    input_features: [B, n_mels, n_frames] float32.
    feature_attention_mask: [B, n_frames] int32.
  """
  waveforms = list(waveforms)
  if not waveforms:
    raise AudioError("log_mel_batch: got no waveforms")
  if names is None:
    names = [f"waveform {i}" for i in range(len(waveforms))]
  elif len(names) != len(waveforms):
    raise ValueError(f"got {len(names)} names for {len(waveforms)} waveforms")
  outs = [log_mel(w, sampling_rate, name=nm, n_frames=n_frames, n_mels=n_mels)
          for w, nm in zip(waveforms, names)]
  return np.stack([f for f, _ in outs]), np.stack([m for _, m in outs])


def fragments(waveform: np.ndarray, n: int, *, min_samples: int = MIN_FRAGMENT_SAMPLES,
              name: str | None = None) -> list[np.ndarray]:
  """Splits a waveform into n contiguous chunks of n_samples // n; the last takes the rest.

  Args:
    waveform: [n_samples] mono waveform.
    n: number of chunks.
    min_samples: the shortest chunk allowed (default 1600 = 0.1 s at 16 kHz).
    name: names the file/item in errors.
  Returns:
    n float32 arrays in order; their concatenation is the waveform.
  Raises:
    AudioTooShortError: n_samples < n * min_samples.
  """
  if n < 1:
    raise ValueError(f"number of fragments must be >= 1, got {n}")
  x = _as_waveform(waveform, name)
  if x.size < n * min_samples:
    raise AudioTooShortError(
        f"{_label(name)}: {x.size} samples are too short to split into {n} fragments of at least "
        f"{min_samples} samples (need {n * min_samples})")
  size = x.size // n
  bounds = [k * size for k in range(n)] + [x.size]
  return [x[bounds[k]:bounds[k + 1]].copy() for k in range(n)]


def all_fragments(waveform: np.ndarray, *, counts: Sequence[int] = FRAGMENT_COUNTS,
                  min_samples: int = MIN_FRAGMENT_SAMPLES,
                  name: str | None = None) -> dict[tuple[int, int], np.ndarray]:
  """Every chunk k of every split N (science.md section 7): 14 fragments for N = 2..5.

  Returns:
    {(N, k): [chunk] float32} with k = 0..N-1, ordered by N then k.
  Raises:
    AudioTooShortError: too short for the largest N (the item is `too_short`).
  """
  return {(n, k): chunk for n in counts
          for k, chunk in enumerate(fragments(waveform, n, min_samples=min_samples, name=name))}


def perturb(waveform: np.ndarray, snr_db: float = 0.0, seed: int | np.random.Generator = 0, *,
            name: str | None = None) -> np.ndarray:
  """Adds white Gaussian noise at a given SNR (branch P of science.md section 1).

  The SNR is relative to the waveform's mean power over all its samples. The noise drawn
  from `np.random.default_rng(seed)` is rescaled so that its mean power is exactly
  `P_signal / 10**(snr_db / 10)`; the result is not clipped. Silent (all-zero) audio
  has no SNR and is an error.

  Args:
    waveform: [n] mono waveform.
    snr_db: signal-to-noise ratio in dB (finite).
    seed: seed or numpy Generator; the same seed gives the same noise.
    name: names the file/item in errors.
  Returns:
    [n] float32 noisy waveform.
  """
  if not np.isfinite(snr_db):
    raise ValueError(f"snr_db must be finite, got {snr_db}")
  x = _as_waveform(waveform, name).astype(np.float64)
  signal_power = np.mean(x**2)
  if signal_power == 0.0:
    raise AudioError(f"{_label(name)}: audio is silent (all zeros); an SNR relative to it is undefined")
  noise = np.random.default_rng(seed).standard_normal(x.size)
  noise *= np.sqrt(signal_power / 10.0**(snr_db / 10.0) / np.mean(noise**2))
  return (x + noise).astype(np.float32)
