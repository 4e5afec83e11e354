"""jaxalm.audio: loading, Whisper log-mel parity with transformers, fragments, perturbation."""

from __future__ import annotations

import contextlib
import functools
import math
import re
import warnings
from unittest import mock

import librosa
import numpy as np
import pytest
import soundfile as sf
from transformers import WhisperFeatureExtractor
from transformers.models.whisper import feature_extraction_whisper as hf_whisper

from jaxalm import audio
from jaxalm.audio import AudioError, AudioTooShortError, AudioTruncatedWarning

SR = 16000
LENGTHS_S = (0.1, 1.0, 7.3, 29.99, 30.0)
KINDS = ("speech", "tone", "quiet_tone", "noise", "silence")


@pytest.fixture(scope="module")
def fe():
  return WhisperFeatureExtractor(feature_size=128)


def hf_features(extractor, waveform, numpy_path: bool):
  """HF features and mask; numpy_path=True forces the float64 numpy path (as without torch)."""
  patch = (mock.patch.object(hf_whisper, "is_torch_available", lambda: False) if numpy_path
           else contextlib.nullcontext())
  with patch:
    out = extractor(waveform, sampling_rate=SR, return_attention_mask=True, padding="max_length",
                    return_tensors="np")
  return out["input_features"], out["attention_mask"]


def make_signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
  """[round(seconds * 16000)] float32 test signal; shorter ones are prefixes of longer ones."""
  n = int(round(seconds * SR))
  return _signal(kind, max(n, LONGEST), seed)[:n].copy()


LONGEST = int(31.5 * SR)


@functools.lru_cache(maxsize=None)
def _signal(kind: str, n: int, seed: int) -> np.ndarray:
  t = np.arange(n) / SR
  rng = np.random.default_rng(seed)
  if kind == "speech":
    # Voiced source with a moving pitch, harmonics shaped by three moving formants,
    # a 4 Hz syllable envelope and a little aspiration noise.
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = [(700 + 150 * np.sin(2 * np.pi * 2.0 * t), 130),
                (1220 + 300 * np.sin(2 * np.pi * 1.3 * t), 90),
                (2600 + 200 * np.sin(2 * np.pi * 0.9 * t), 160)]
    x = np.zeros(n)
    for k in range(1, 50):
      gain = sum(np.exp(-0.5 * ((k * f0 - fc) / bw) ** 2) for fc, bw in formants)
      x += gain * np.sin(k * phase) / k**0.5
    x *= (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    x += 0.01 * rng.standard_normal(n)
    return (0.5 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32)
  if kind == "tone":
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  if kind == "quiet_tone":  # exactly on FFT bin 25, 60 dB down
    return (1e-3 * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.float32)
  if kind == "noise":
    return (0.1 * rng.standard_normal(n)).astype(np.float32)
  if kind == "silence":
    return np.zeros(n, np.float32)
  raise ValueError(kind)


# ---------------------------------------------------------------- log-mel parity


@pytest.mark.parametrize("seconds", LENGTHS_S)
@pytest.mark.parametrize("kind", KINDS)
def test_log_mel_matches_hf(fe, kind, seconds):
  x = make_signal(kind, seconds)
  feats, mask = audio.log_mel(x)
  hf_np, hf_np_mask = hf_features(fe, x, numpy_path=True)
  hf_pt, hf_pt_mask = hf_features(fe, x, numpy_path=False)

  assert feats.shape == (128, 3000) and feats.dtype == np.float32
  assert mask.shape == (3000,) and mask.dtype == np.int32
  assert np.abs(hf_np[0] - hf_pt[0]).max() < 1e-4  # the two HF paths agree
  assert np.abs(feats - hf_np[0]).max() <= 1e-6
  assert np.abs(feats - hf_pt[0]).max() <= 1e-4
  np.testing.assert_array_equal(mask, hf_np_mask[0])
  np.testing.assert_array_equal(mask, hf_pt_mask[0])
  assert mask.sum() == math.ceil(x.size / 160) and mask[:mask.sum()].all()


def test_tolerance_separates_hf_paths(fe):
  """On speech the HF numpy and torch paths differ by more than 1e-6, so the 1e-6 test binds."""
  x = make_signal("speech", 7.3)
  hf_np, _ = hf_features(fe, x, numpy_path=True)
  hf_pt, _ = hf_features(fe, x, numpy_path=False)
  assert 1e-6 < np.abs(hf_np - hf_pt).max() < 1e-4
  feats, _ = audio.log_mel(x)
  assert np.abs(feats - hf_np[0]).max() <= 1e-6
  # A 1e-4 relative gain change is already visible at this tolerance.
  louder, _ = audio.log_mel(x * np.float32(1 + 1e-4))
  assert np.abs(louder - hf_np[0]).max() > 1e-6


@pytest.mark.parametrize("n", [1, 159, 160, 161, 16001, 479840, 479999, 480000])
def test_mask_rule_matches_hf(fe, n):
  x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
  _, mask = audio.log_mel(x)
  _, hf_mask = hf_features(fe, x, numpy_path=False)
  np.testing.assert_array_equal(mask, hf_mask[0])
  assert mask.sum() == math.ceil(n / 160)


def test_truncates_long_audio_with_warning(fe):
  x = make_signal("speech", 31.5)
  with pytest.warns(AudioTruncatedWarning, match=r"clip\.wav: 31\.50 s .*truncated"):
    feats, mask = audio.log_mel(x, name="clip.wav")
  hf_np, hf_mask = hf_features(fe, x, numpy_path=True)
  assert np.abs(feats - hf_np[0]).max() <= 1e-6
  np.testing.assert_array_equal(mask, hf_mask[0])
  assert mask.sum() == 3000
  with warnings.catch_warnings():
    warnings.simplefilter("error", AudioTruncatedWarning)
    audio.log_mel(x[:480000])


def test_float64_input_is_cast_like_hf(fe):
  x = make_signal("speech", 2.0).astype(np.float64) + 1e-9
  feats, _ = audio.log_mel(x)
  hf_np, _ = hf_features(fe, x, numpy_path=True)
  assert np.abs(feats - hf_np[0]).max() <= 1e-6


def test_log_mel_batch_matches_hf_and_single(fe):
  xs = [make_signal("speech", 0.5), make_signal("noise", 3.0, 2), make_signal("tone", 12.0)]
  feats, mask = audio.log_mel_batch(xs)
  assert feats.shape == (3, 128, 3000) and mask.shape == (3, 3000)
  for i, x in enumerate(xs):
    single, single_mask = audio.log_mel(x)
    np.testing.assert_array_equal(feats[i], single)
    np.testing.assert_array_equal(mask[i], single_mask)
  hf_np, hf_np_mask = hf_features(fe, xs, numpy_path=True)
  hf_pt, hf_pt_mask = hf_features(fe, xs, numpy_path=False)
  assert np.abs(feats - hf_np).max() <= 1e-6
  assert np.abs(feats - hf_pt).max() <= 1e-4
  np.testing.assert_array_equal(mask, hf_np_mask)
  np.testing.assert_array_equal(mask, hf_pt_mask)
  stacked, _ = audio.log_mel_batch(np.stack([xs[0], xs[0]]))
  np.testing.assert_array_equal(stacked[1], feats[0])


def test_shorter_window_and_80_mels_match_hf():
  x = make_signal("speech", 7.3)
  fe15 = WhisperFeatureExtractor(feature_size=128, chunk_length=15)
  feats, mask = audio.log_mel(x, n_frames=1500)
  hf_np, hf_mask = hf_features(fe15, x, numpy_path=True)
  assert feats.shape == (128, 1500)
  assert np.abs(feats - hf_np[0]).max() <= 1e-6
  np.testing.assert_array_equal(mask, hf_mask[0])
  with pytest.warns(AudioTruncatedWarning, match="15 s"):
    audio.log_mel(make_signal("noise", 16.0), n_frames=1500)

  fe80 = WhisperFeatureExtractor(feature_size=80)
  feats, _ = audio.log_mel(x, n_mels=80)
  hf_np, _ = hf_features(fe80, x, numpy_path=True)
  assert feats.shape == (80, 3000)
  assert np.abs(feats - hf_np[0]).max() <= 1e-6


def test_log_mel_rejects_bad_input():
  x = make_signal("tone", 1.0)
  with pytest.raises(AudioError, match=r"item7: .*16000 Hz.*44100.*resample.*load_audio"):
    audio.log_mel(x, 44100, name="item7")
  with pytest.raises(AudioError, match="mono 1-D"):
    audio.log_mel(np.stack([x, x], axis=1))
  with pytest.raises(AudioError, match="no samples"):
    audio.log_mel(np.zeros(0, np.float32))
  with pytest.raises(AudioError, match="non-finite"):
    audio.log_mel(np.where(np.arange(x.size) == 5, np.nan, x))
  with pytest.raises(AudioError, match="float"):
    audio.log_mel((x * 32767).astype(np.int16))
  with pytest.raises(AudioError, match=r"waveform 1: .*mono"):
    audio.log_mel_batch([x, np.stack([x, x])])


# ---------------------------------------------------------------- load_audio


def chirp(seconds: float, rate: int) -> np.ndarray:
  t = np.arange(int(seconds * rate)) / rate
  return (0.3 * np.sin(2 * np.pi * (200 * t + 400 * t**2))).astype(np.float32)


@pytest.mark.parametrize("ext,subtype,atol", [
  ("wav", "FLOAT", 0.0), ("wav", "PCM_16", 1 / 32768), ("flac", "PCM_16", 1 / 32768),
  ("flac", "PCM_24", 1 / 2**23)])
def test_load_lossless_round_trip(tmp_path, ext, subtype, atol):
  x = chirp(1.5, SR)
  path = tmp_path / f"a.{ext}"
  sf.write(path, x, SR, subtype=subtype)
  y = audio.load_audio(path)
  assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
  np.testing.assert_allclose(y, x, rtol=0, atol=atol)


@pytest.mark.parametrize("ext", ["ogg", "mp3"])
def test_load_lossy_round_trip(tmp_path, ext):
  if ext.upper() not in sf.available_formats():
    pytest.skip(f"this libsndfile cannot write {ext}")
  x = chirp(1.5, SR)
  path = tmp_path / f"a.{ext}"
  sf.write(path, x, SR)
  y = audio.load_audio(str(path))
  assert y.dtype == np.float32 and y.shape == x.shape
  snr = 10 * np.log10(np.mean(x.astype(np.float64)**2) / np.mean((y - x).astype(np.float64)**2))
  assert snr > 20


@pytest.mark.parametrize("rate", [44100, 8000])
def test_load_resamples_like_librosa(tmp_path, rate):
  x = chirp(2.0, rate)
  path = tmp_path / f"r{rate}.wav"
  sf.write(path, x, rate, subtype="FLOAT")
  y = audio.load_audio(path)
  expected = librosa.resample(x, orig_sr=rate, target_sr=SR)
  assert y.shape == expected.shape == (math.ceil(x.size * SR / rate),)
  np.testing.assert_allclose(y, expected, rtol=0, atol=1e-7)
  # Away from the edges the resampled chirp is the chirp sampled at 16 kHz.
  t = np.arange(y.size) / SR
  ideal = 0.3 * np.sin(2 * np.pi * (200 * t + 400 * t**2))
  inner = slice(SR // 20, -SR // 20)
  assert np.abs(y[inner] - ideal[inner]).max() < 2e-3
  assert audio.load_audio(path, sampling_rate=rate).shape == x.shape


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # audioread imports, via librosa.load
def test_load_stereo_to_mono(tmp_path):
  left, right = chirp(1.0, SR), make_signal("noise", 1.0)
  path = tmp_path / "stereo.wav"
  sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
  y = audio.load_audio(path)
  np.testing.assert_allclose(y, (left + right) / 2, rtol=0, atol=1e-7)
  path44 = tmp_path / "stereo44.flac"
  sf.write(path44, np.stack([chirp(1.0, 44100), -chirp(1.0, 44100) / 2], axis=1), 44100)
  np.testing.assert_allclose(audio.load_audio(path44), librosa.load(path44, sr=SR)[0], atol=1e-7)


def test_load_bad_files_name_the_file(tmp_path):
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(np.random.default_rng(0).bytes(4096))
  garbage_flac = tmp_path / "garbage.flac"
  garbage_flac.write_bytes(b"fLaC" + np.random.default_rng(1).bytes(4096))
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  zero = tmp_path / "zero.wav"
  sf.write(zero, np.zeros(0, np.float32), SR)
  cases = {tmp_path / "missing.flac": "not found", garbage: "cannot read",
           garbage_flac: "cannot read", empty: "empty", zero: "no samples", tmp_path: "directory"}
  for path, what in cases.items():
    with pytest.raises(AudioError, match=what) as err:
      audio.load_audio(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


# ---------------------------------------------------------------- fragments


@pytest.mark.parametrize("n_samples", [16000, 16003, 8000])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_fragments_split_in_order(n_samples, n):
  x = np.arange(n_samples, dtype=np.float32)
  parts = audio.fragments(x, n)
  assert len(parts) == n
  size = n_samples // n
  assert [p.size for p in parts] == [size] * (n - 1) + [n_samples - (n - 1) * size]
  assert all(p.dtype == np.float32 for p in parts)
  np.testing.assert_array_equal(np.concatenate(parts), x)
  assert all(p[0] == k * size for k, p in enumerate(parts))


def test_fragments_too_short():
  x = np.ones(1600 * 3 - 1, np.float32)
  assert len(audio.fragments(x, 2)) == 2
  with pytest.raises(AudioTooShortError, match=r"clip7: 4799 samples .* 3 fragments .*1600"):
    audio.fragments(x, 3, name="clip7")
  assert len(audio.fragments(x, 3, min_samples=1000)) == 3
  assert issubclass(AudioTooShortError, AudioError)
  with pytest.raises(ValueError):
    audio.fragments(x, 0)


def test_all_fragments():
  x = make_signal("speech", 2.3)
  frags = audio.all_fragments(x)
  assert list(frags) == [(n, k) for n in (2, 3, 4, 5) for k in range(n)]
  assert len(frags) == 14
  for n in (2, 3, 4, 5):
    np.testing.assert_array_equal(np.concatenate([frags[n, k] for k in range(n)]), x)
    for k, part in enumerate(audio.fragments(x, n)):
      np.testing.assert_array_equal(frags[n, k], part)
  with pytest.raises(AudioTooShortError):
    audio.all_fragments(np.ones(1600 * 5 - 1, np.float32))


# ---------------------------------------------------------------- perturbation


def measured_snr(clean, noisy):
  clean = clean.astype(np.float64)
  return 10 * np.log10(np.mean(clean**2) / np.mean((noisy.astype(np.float64) - clean)**2))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 30.0])
@pytest.mark.parametrize("kind", ["speech", "tone", "quiet_tone"])
def test_perturb_snr(kind, snr_db):
  x = make_signal(kind, 0.1)
  y = audio.perturb(x, snr_db, seed=3)
  assert y.dtype == np.float32 and y.shape == x.shape
  assert abs(measured_snr(x, y) - snr_db) < 0.5
  assert abs(measured_snr(x, y) - snr_db) < 1e-3  # the noise power is set exactly


def test_perturb_deterministic_and_gaussian():
  x = make_signal("speech", 1.0)
  x_before = x.copy()
  a, b = audio.perturb(x, seed=7), audio.perturb(x, seed=7)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(x, x_before)
  assert not np.array_equal(a, audio.perturb(x, seed=8))
  noise = (a.astype(np.float64) - x) / np.sqrt(np.mean(x.astype(np.float64)**2))
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 1e-3
  kurtosis = np.mean(noise**4) / np.mean(noise**2)**2
  assert abs(kurtosis - 3) < 0.3
  assert abs(np.corrcoef(noise[:-1], noise[1:])[0, 1]) < 0.05  # white
  np.testing.assert_array_equal(audio.perturb(x, seed=np.random.default_rng(7)), a)


def test_perturb_silence_is_an_error():
  with pytest.raises(AudioError, match=r"item3: .*silent"):
    audio.perturb(np.zeros(16000, np.float32), name="item3")
  with pytest.raises(ValueError, match="finite"):
    audio.perturb(make_signal("tone", 0.5), snr_db=float("inf"))
