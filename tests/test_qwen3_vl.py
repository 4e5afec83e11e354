"""Qwen3-VL in JAX against transformers' PyTorch model: tiny random checkpoints converted and
loaded like real ones, images of different sizes in one batch with HF's 3D positions, text
only, per-block parity, KV-cache continuation, and real-size shapes (2B, 8B) without weights."""

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import tiny_hf_vl as tv  # noqa: E402
import jaxalm  # noqa: E402
from jaxalm import prompts  # noqa: E402
from jaxalm.converters import ConversionError, convert  # noqa: E402
from jaxalm.models import qwen3_vl  # noqa: E402
from jaxalm.nn import decoder, vision  # noqa: E402
from jaxalm.nn import params as param_specs  # noqa: E402
from jaxalm.nn.rope import mrope_cos_sin  # noqa: E402
from jaxalm.nn.sites import Patch  # noqa: E402

LOGITS_ATOL = 1e-4
BLOCK_ATOL = 1e-5
CAPTURE = ("lm.resid_pre", "lm.resid_post", "vision.resid_post", "vision.out", "vision.deepstack")
EXTRA_TOKENS = 5


@pytest.fixture(scope="module")
def tok():
  return tv.make_tokenizer()


@pytest.fixture(scope="module")
def models(tok, tmp_path_factory):
  """name -> (HF model, loaded jaxalm model, HF checkpoint dir), built once per config."""
  cache = {}

  def get(name):
    if name not in cache:
      root = tmp_path_factory.mktemp(name)
      src = tv.make_checkpoint(root / "hf", name, seed=1, tokenizer=tok)
      dst = convert(src, root / "jaxalm")
      cache[name] = (tv.build_model(name, seed=1, tokenizer=tok), jaxalm.load(dst), src)
    return cache[name]

  return get


@functools.cache
def _jitted(forward):
  """One jitted forward per loaded model, so calls with equal shapes share a compilation."""
  return jax.jit(forward, static_argnames="capture")


@pytest.fixture(scope="module")
def proc(models):
  return tv.load_processor(models("gqa")[2])


@pytest.fixture(scope="module")
def batch(proc):
  """Right-padded: 1, 1, 2 and 0 images of 4x4, 6x10, 12x4 + 4x4 patches."""
  return tv.make_inputs(proc, (1, 1, 2, 0), seed=0)


@pytest.fixture(scope="module")
def batch_left(proc):
  """The same prompts and images, left-padded (same shapes: one compilation serves both)."""
  return tv.make_inputs(proc, (1, 1, 2, 0), seed=0, padding_side="left")


def _forward(model, inputs, **kw):
  return _jitted(model.forward)(model.params, **{k: jnp.asarray(v) for k, v in inputs.items()}, **kw)


def _ablate_deepstack(model, inputs, on: bool) -> dict:
  """A `vision.deepstack` patch that zeroes the DeepStack features when `on`, else a no-op
  (same program either way)."""
  c = model.config
  shape = (len(c.vision.deepstack_layers), inputs["pixel_values"].shape[0] // c.vision.merge_unit)
  return {"vision.deepstack": Patch(jnp.zeros((*shape, c.text.hidden_size)), jnp.full(shape, on))}


def _cache(model, inputs):
  """An empty KV cache with room for EXTRA_TOKENS more tokens."""
  b, s = inputs["input_ids"].shape
  return model.init_cache(b, s + EXTRA_TOKENS)


@pytest.fixture(scope="module")
def gqa_out(models, batch):
  """The gqa model on `batch` (through an empty KV cache), with the captures the tests read."""
  _, model, _ = models("gqa")
  return _forward(model, batch, capture=CAPTURE, patch=_ablate_deepstack(model, batch, False),
                  cache=_cache(model, batch))


def _hf_logits(hf, inputs):
  with torch.no_grad():
    return hf(**{k: torch.from_numpy(v) for k, v in inputs.items()}, use_cache=False).logits.numpy()


def _max_err(got, want, mask):
  return float(np.abs(np.asarray(got) - want)[mask.astype(bool)].max())


# ----------------------------------------------------------------------------- processor, layout


def test_processor_layout_and_expansion(proc, tok, batch):
  image_id = tok.convert_tokens_to_ids("<|image_pad|>")
  grid = batch["image_grid_thw"]
  assert grid.tolist() == [[1, 4, 4], [1, 6, 10], [1, 12, 4], [1, 4, 4]]
  assert batch["pixel_values"].shape == (int(grid.prod(-1).sum()), 3 * 2 * 16 * 16)
  ids = batch["input_ids"]
  assert (ids == image_id).sum(-1).tolist() == [4, 15, 12 + 4, 0]
  assert np.array_equal(batch["mm_token_type_ids"], (ids == image_id).astype(batch["mm_token_type_ids"].dtype))
  layout = prompts.layout("qwen3_vl")
  text = tv.DEFAULT_TEXTS[0]
  assert tv.make_prompt(proc, text) == layout.prompt(text, 1)
  assert tv.make_prompt(proc, text, 0) == layout.prompt(text, None)
  # The processor expands the one placeholder to grid.prod() / 4 tokens: the layout's prefix.
  expanded = tok.decode(ids[0][batch["attention_mask"][0] == 1])
  assert expanded == layout.prompt(text, 4)
  prefix, suffix = prompts.split_tokens(tok, layout.prefix(4), layout.suffix(text))
  assert prefix + suffix == ids[0][batch["attention_mask"][0] == 1].tolist()
  assert prefix[-1] == tok.convert_tokens_to_ids("<|vision_end|>")


def test_checkpoint_names(models):
  from safetensors import safe_open

  for name in tv.TINY_CONFIGS:
    hf, model, src = models(name)
    with safe_open(str(src / "model.safetensors"), framework="np") as f:
      keys = set(f.keys())
    assert keys == set(hf.state_dict()) - ({"lm_head.weight"} if hf.config.tie_word_embeddings else set())
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in keys} <= {"model.visual", "model.language_model",
                                                                      "lm_head.weight"}
    assert ("lm_head" in model.params) == (not hf.config.tie_word_embeddings)
    assert param_specs.count(qwen3_vl.spec(model.config)) == sum(p.numel() for p in hf.parameters())


# ----------------------------------------------------------------------------- positions


@functools.cache
def _rope_index(cfg):
  return jax.jit(functools.partial(qwen3_vl.rope_index, cfg))


@pytest.mark.parametrize("padding", ["right", "left"])
def test_rope_index_matches_hf(models, batch, batch_left, padding):
  hf, model, _ = models("gqa")
  b = batch if padding == "right" else batch_left
  x = {k: torch.from_numpy(v) for k, v in b.items()}
  want, want_deltas = hf.model.get_rope_index(x["input_ids"], x["mm_token_type_ids"], x["image_grid_thw"],
                                              attention_mask=x["attention_mask"])
  got, deltas = _rope_index(model.config)(*(jnp.asarray(b[k]) for k in (
    "input_ids", "image_grid_thw", "attention_mask", "mm_token_type_ids")))
  assert np.array_equal(np.asarray(got), want.numpy())
  assert np.array_equal(np.asarray(deltas), want_deltas.numpy()[:, 0])
  # The image rows really are 3D, and the default (from input_ids) agrees.
  assert not np.array_equal(want[1].numpy(), want[2].numpy())
  got2, _ = _rope_index(model.config)(*(jnp.asarray(b[k]) for k in ("input_ids", "image_grid_thw", "attention_mask")))
  assert np.array_equal(np.asarray(got2), want.numpy())


# ----------------------------------------------------------------------------- full-model parity


@pytest.mark.parametrize("name", sorted(tv.TINY_CONFIGS))
def test_logits_parity_images(models, batch, gqa_out, name):
  hf, model, _ = models(name)
  want = _hf_logits(hf, batch)
  out = gqa_out if name == "gqa" else _forward(model, batch)
  err = _max_err(out.logits, want, batch["attention_mask"])
  print(f"{name}: max-abs logits error {err:.2e} (logit std {want.std():.2f})")
  assert err <= LOGITS_ATOL
  # The reference really uses its 3D positions: 1D ones change its logits clearly.
  flat = {**batch, "position_ids": np.cumsum(batch["attention_mask"], -1) - 1}
  assert _max_err(_hf_logits(hf, flat), want, batch["attention_mask"]) > 100 * LOGITS_ATOL


def test_logits_parity_left_padding(models, batch_left):
  hf, model, _ = models("gqa")
  b = batch_left
  assert (b["attention_mask"][:, 0] == 0).any()
  out = _forward(model, b, capture=CAPTURE, patch=_ablate_deepstack(model, b, False), cache=_cache(model, b))
  err = _max_err(out.logits, _hf_logits(hf, b), b["attention_mask"])
  print(f"left padding: max-abs logits error {err:.2e}")
  assert err <= LOGITS_ATOL


def test_logits_parity_text_only(models, proc):
  hf, model, _ = models("gqa")
  b = tv.make_inputs(proc, (0, 0, 0), seed=3)
  assert "pixel_values" not in b
  err = _max_err(_forward(model, b).logits, _hf_logits(hf, b), b["attention_mask"])
  print(f"text only: max-abs logits error {err:.2e}")
  assert err <= LOGITS_ATOL


def test_vision_tower_parity(models, batch, gqa_out):
  hf, model, _ = models("gqa")
  with torch.no_grad():
    ref = hf.model.get_image_features(torch.from_numpy(batch["pixel_values"]),
                                      torch.from_numpy(batch["image_grid_thw"]), return_dict=True)
  tokens, deepstack = gqa_out.captures["vision.out"], gqa_out.captures["vision.deepstack"]
  assert deepstack.shape == (3, *tokens.shape) and gqa_out.captures["vision.resid_post"].shape[0] == 4
  errs = {
    "last block": np.abs(np.asarray(gqa_out.captures["vision.resid_post"][-1]) - ref.last_hidden_state.numpy()).max(),
    "merger": np.abs(np.asarray(tokens) - torch.cat(ref.pooler_output).numpy()).max(),
    "deepstack": max(np.abs(np.asarray(deepstack[i]) - torch.cat(f).numpy()).max()
                     for i, f in enumerate(ref.deepstack_features)),
  }
  print("vision tower max-abs errors: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
  assert max(errs.values()) <= BLOCK_ATOL, errs


def test_vision_padding_rows_and_unrolled(models, batch, gqa_out):
  """Patch rows past the grids change nothing, and unrolled blocks agree with the scan."""
  _, model, _ = models("gqa")
  pv = batch["pixel_values"]
  padded = np.concatenate([pv, np.ones((8, pv.shape[1]), np.float32)])
  enc = functools.partial(qwen3_vl.encode_images, cfg=model.config.replace(scan_layers=False))
  tokens, deepstack, _ = jax.jit(enc)(model.params, pixel_values=jnp.asarray(padded),
                                      image_grid_thw=jnp.asarray(batch["image_grid_thw"]))
  n = pv.shape[0] // 4
  np.testing.assert_allclose(np.asarray(tokens)[:n], np.asarray(gqa_out.captures["vision.out"]), atol=BLOCK_ATOL)
  np.testing.assert_allclose(np.asarray(deepstack)[:, :n], np.asarray(gqa_out.captures["vision.deepstack"]),
                             atol=BLOCK_ATOL)


# ----------------------------------------------------------------------------- per block


def test_block_parity(models):
  from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

  hf, model, _ = models("gqa")
  cfg, vcfg, p = model.config, model.config.vision, model.params["visual"]
  visual = hf.model.visual
  grid = np.array([[1, 4, 6], [1, 8, 4]])
  n = int(grid.prod(-1).sum())
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, vcfg.hidden_size)).astype(np.float32)

  @jax.jit
  def from_grid(table, grid):
    geometry = vision.patch_geometry(grid, n, vcfg.spatial_merge_size)
    pos = vision.interpolated_positions(table, geometry, vcfg.grid_side)
    return (pos, *vision.rotary_cos_sin(vcfg, geometry), geometry["segment"][:, None] == geometry["segment"][None, :])

  pos, cos, sin, mask = from_grid(p["pos_embed"]["embedding"], jnp.asarray(grid))
  with torch.no_grad():
    tgrid, tx = torch.from_numpy(grid), torch.from_numpy(x)
    hcos, hsin = visual.rotary_pos_emb(tx, get_vision_position_ids(tgrid, vcfg.spatial_merge_size))
    cu = torch.tensor([0, 24, 56], dtype=torch.int32)
    want_block = visual.blocks[1](tx, cu_seqlens=cu, position_embeddings=(hcos, hsin)).numpy()
    want_merger = visual.merger(tx).numpy()
    want_ds = visual.deepstack_merger_list[1](tx).numpy()
    idx, w = get_vision_interpolation_indices_and_weights(
      tgrid, num_grid_per_side=visual.num_grid_per_side, mode="bilinear", align_corners=True,
      spatial_merge_size=vcfg.spatial_merge_size)
    want_pos = (visual.pos_embed(idx) * w[:, :, None]).sum(1).numpy()
  assert float(np.abs(np.asarray(cos) - hcos.numpy()).max()) <= 1e-6
  assert float(np.abs(np.asarray(sin) - hsin.numpy()).max()) <= 1e-6
  layer = jax.tree.map(lambda a: a[1], p["layers"])
  got_block = jax.jit(lambda q, x: vision.block(q, vcfg, x, cos, sin, mask))(layer, jnp.asarray(x))
  merge = jax.jit(functools.partial(vision.merge, cfg=vcfg), static_argnames="postshuffle_norm")
  errs = {
    "positions": float(np.abs(np.asarray(pos) - want_pos).max()),
    "vision block": float(np.abs(np.asarray(got_block) - want_block).max()),
    "merger": float(np.abs(np.asarray(merge(p["merger"], x=jnp.asarray(x), postshuffle_norm=False))
                           - want_merger).max()),
    "deepstack merger": float(np.abs(np.asarray(merge(p["deepstack_merger_list"]["1"], x=jnp.asarray(x),
                                                      postshuffle_norm=True)) - want_ds).max()),
  }
  # One decoder layer with 3D positions, GQA, qk-norm and a right-padded causal mask.
  tcfg = cfg.text
  b, s = 2, 12
  h = rng.standard_normal((b, s, tcfg.hidden_size)).astype(np.float32)
  pos3 = np.stack([np.arange(s) + 3 * k for k in range(3)])[:, None, :].repeat(b, 1)
  token_mask = np.arange(s)[None, :] < np.array([[s], [8]])
  allowed = np.tril(np.ones((s, s), bool))[None] & token_mask[:, None, :]
  with torch.no_grad():
    th = torch.from_numpy(h)
    pe = hf.model.language_model.rotary_emb(th, torch.from_numpy(pos3))
    additive = torch.where(torch.from_numpy(allowed)[:, None], 0.0, torch.finfo(torch.float32).min)
    want_layer = hf.model.language_model.layers[1](th, attention_mask=additive, position_embeddings=pe).numpy()

  @jax.jit
  def decoder_layer(q, h, pos3):
    cos3, sin3 = mrope_cos_sin(pos3, tcfg.head_dim, tcfg.rope_theta, tcfg.mrope_section, True)
    fn = decoder._layer(tcfg, (), cos3, sin3, jnp.asarray(allowed), jnp.zeros((), jnp.int32))
    return fn(h, (q, {}, None))[0], cos3, sin3

  layer = jax.tree.map(lambda a: a[1], model.params["language_model"]["layers"])
  got_layer, cos3, sin3 = decoder_layer(layer, jnp.asarray(h), jnp.asarray(pos3))
  assert float(np.abs(np.asarray(cos3) - pe[0].numpy()).max()) <= 1e-6
  assert float(np.abs(np.asarray(sin3) - pe[1].numpy()).max()) <= 1e-6
  errs["decoder layer"] = float(np.abs(np.asarray(got_layer) - want_layer)[token_mask].max())
  print("per-block max-abs errors: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()))
  assert max(errs.values()) <= BLOCK_ATOL, errs


# ----------------------------------------------------------------------------- sites, DeepStack, cache


def test_deepstack_sites(models, batch, gqa_out):
  _, model, _ = models("gqa")
  post, pre = gqa_out.captures["lm.resid_post"], gqa_out.captures["lm.resid_pre"]
  np.testing.assert_array_equal(np.asarray(post[:-1]), np.asarray(pre[1:]))
  # Zeroing the DeepStack features changes every image position's logits.
  ablated = _forward(model, batch, capture=CAPTURE, patch=_ablate_deepstack(model, batch, True),
                     cache=_cache(model, batch))
  change = np.abs(np.asarray(ablated.logits) - np.asarray(gqa_out.logits)).max(-1)
  assert change[batch["mm_token_type_ids"].astype(bool)].min() > 1e-2


def test_cache_continuation(models, tok, batch, gqa_out):
  """Text appended after the cached image prompts, at HF's continued positions
  (default positions + rope deltas), against HF on the whole sequence."""
  hf, model, _ = models("gqa")
  new = np.array(tok("Answer: A")["input_ids"] + tok("<|im_end|>")["input_ids"])
  assert len(new) == EXTRA_TOKENS
  b = len(batch["input_ids"])
  _, deltas = _rope_index(model.config)(*(jnp.asarray(batch[k]) for k in (
    "input_ids", "image_grid_thw", "attention_mask", "mm_token_type_ids")))
  ids = jnp.asarray(np.tile(new, (b, 1)))
  mask = jnp.ones_like(ids)
  positions = decoder.default_positions(mask.astype(bool), gqa_out.cache) + deltas[:, None]
  out = _jitted(model.forward)(model.params, input_ids=ids, attention_mask=mask, position_ids=positions,
                               cache=gqa_out.cache)
  whole = {**batch, "input_ids": np.concatenate([batch["input_ids"], np.asarray(ids)], 1),
           "attention_mask": np.concatenate([batch["attention_mask"], np.asarray(mask)], 1),
           "mm_token_type_ids": np.concatenate([batch["mm_token_type_ids"], np.zeros_like(ids)], 1)}
  want = _hf_logits(hf, whole)[:, -EXTRA_TOKENS:]
  err = float(np.abs(np.asarray(out.logits) - want).max())
  print(f"cache continuation: max-abs logits error {err:.2e}")
  assert err <= LOGITS_ATOL


def test_mrope_contiguous_matches_qwen2_vl():
  from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
  from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

  section = (4, 6, 6)
  rope = Qwen2VLRotaryEmbedding(Qwen2VLTextConfig(
    hidden_size=64, num_attention_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                            "mrope_section": list(section)}))
  pos = np.random.default_rng(0).integers(0, 500, size=(3, 2, 7))
  with torch.no_grad():
    want = rope(torch.zeros(1), torch.from_numpy(pos))
  got = mrope_cos_sin(jnp.asarray(pos), 32, 1e4, section, interleaved=False)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), w.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- conversion, configs


def test_conversion_and_input_errors(models, tmp_path):
  from safetensors.numpy import load_file, save_file

  _, _, src = models("gqa")
  bad = tmp_path / "bad"
  bad.mkdir()
  for f in src.iterdir():
    (bad / f.name).write_bytes(f.read_bytes())
  sd = load_file(bad / "model.safetensors")
  sd.pop("model.visual.blocks.2.attn.qkv.bias")
  sd["model.visual.extra.weight"] = np.zeros(3, np.float32)
  save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ConversionError, match="model.visual.extra.weight"):
    convert(bad, tmp_path / "out")
  sd.pop("model.visual.extra.weight")
  save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(ConversionError, match=r"visual/layers/attn/qkv/bias \(layers \[2\]\)"):
    convert(bad, tmp_path / "out")
  _, model, _ = models("gqa")
  ids = np.full((1, 8), model.config.image_token_id)
  with pytest.raises(ValueError, match="8 image tokens in input_ids, but image_grid_thw gives 4"):
    model.forward(model.params, input_ids=ids, pixel_values=np.zeros((16, 1536), np.float32),
                  image_grid_thw=np.array([[1, 4, 4]]))
  hf_cfg = tv.make_config("gqa").to_dict()
  hf_cfg["text_config"]["attention_bias"] = True
  with pytest.raises(qwen3_vl.ConfigError, match="attention_bias"):
    qwen3_vl.Config.from_hf(hf_cfg)


def _published(text, vision, tie):
  """A config.json as published on the hub (transformers 4.57 names)."""
  return {
    "architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl", "image_token_id": 151655,
    "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "tie_word_embeddings": tie,
    "text_config": {
      "model_type": "qwen3_vl_text", "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "initializer_range": 0.02,
      "max_position_embeddings": 262144, "num_key_value_heads": 8, "rms_norm_eps": 1e-6,
      "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
      "rope_theta": 5000000, "tie_word_embeddings": tie, "use_cache": True, "vocab_size": 151936, **text},
    "vision_config": {
      "model_type": "qwen3_vl", "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "initializer_range": 0.02,
      "num_heads": 16, "num_position_embeddings": 2304, "patch_size": 16, "spatial_merge_size": 2,
      "temporal_patch_size": 2, **vision},
  }


REAL_CONFIGS = {
  "Qwen3-VL-2B-Instruct": _published(
    dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    dict(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
         deepstack_visual_indexes=[5, 11, 17]), tie=True),
  "Qwen3-VL-8B-Instruct": _published(
    dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32),
    dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096,
         deepstack_visual_indexes=[8, 16, 24]), tie=False),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_size_shapes(name):
  from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

  hf_cfg = REAL_CONFIGS[name]
  cfg = qwen3_vl.Config.from_hf(hf_cfg)
  assert cfg.text.mrope_section == (24, 20, 20) and cfg.text.rope_theta == 5e6 and cfg.vision.grid_side == 48
  with torch.device("meta"):
    ref = Qwen3VLForConditionalGeneration(Qwen3VLConfig.from_dict(hf_cfg))
  n_ref = sum(p.numel() for p in ref.parameters())
  spec = qwen3_vl.spec(cfg)
  n = param_specs.count(spec)
  print(f"{name}: {n:,} parameters (HF meta model: {n_ref:,})")
  assert n == n_ref
  shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
  assert shapes["model.visual.patch_embed.proj.weight"] == spec["visual"]["patch_embed"]["proj"]["weight"].shape
  # Two images (16x16 and 8x12 patches) and text, traced at full size without weights.
  grid = jnp.array([[1, 16, 16], [1, 8, 12]])
  n_patches, n_tokens = 256 + 96, (256 + 96) // 4
  ids = jnp.zeros((2, 160), jnp.int32).at[0, 5:5 + 64].set(cfg.image_token_id)
  ids = ids.at[1, 9:9 + 24].set(cfg.image_token_id)
  out = jax.eval_shape(
    lambda p, pv: qwen3_vl.forward(p, cfg, ids, jnp.ones_like(ids), pv, grid, capture=("vision.out",)),
    param_specs.shapes(spec, jnp.bfloat16), jax.ShapeDtypeStruct((n_patches, cfg.vision.patch_dim), jnp.bfloat16))
  assert out.logits.shape == (2, 160, 151936) and out.captures["vision.out"].shape == (n_tokens, cfg.text.hidden_size)
  assert math.isclose(n / 1e9, {"Qwen3-VL-2B-Instruct": 2.13, "Qwen3-VL-8B-Instruct": 8.77}[name], abs_tol=0.01)
