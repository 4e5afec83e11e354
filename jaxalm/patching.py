"""Activation patching between branches, aligned by position role (science.md section 6).

The target branch (joint, J) is run with activations from the source branch (same-audio,
A) written in at one (site, layer, role). Roles are aligned by role, not index, because J
and A differ in length: the k-th token of a role in J takes the k-th token of that role in
A. Roles of a prompt position:

  header       chat header before the media block
  audio        the media span (identical positions in J and A: the shared prefix)
  instruction  question, candidates and the answer instruction
  evidence     the evidence line (J only; it has no aligned source position)
  answer       the answer-side positions: end of user turn and assistant header, from
               which the answer is predicted
  label        the candidate label tokens being scored (never patched)

A sweep over sites x layers x roles is one compiled call: the patch masks are data and the
sweep is `jax.lax.map` over them with `batch_size` specs vmapped at a time.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalm.nn.sites import LAYER_SITES, Patch
from jaxalm.scoring import label_logprobs

ROLES = ("pad", "header", "audio", "instruction", "evidence", "answer", "label")
PATCH_ROLES = ("audio", "instruction", "answer")
SITES = LAYER_SITES["lm"]
ROLE_ID = {r: i for i, r in enumerate(ROLES)}
NO_EFFECT = 1e-4  # margin change below float32 noise: the patch did nothing


@dataclasses.dataclass
class PatchBatch:
  """Host arrays for I items x C candidates (rows item-major, R = I * C).

  target/source: HF-named inputs of the J and A rows (whole prompts + label, right padded).
  *_roles: [R, S] role ids; *_label: (start [R], len [R]); align: [R, S] source position of
  each target position (valid where `aligned`); cand_mask [I, C]; ya, yt: [I] indices.
  """
  items: list
  target: dict
  source: dict
  target_roles: np.ndarray
  source_roles: np.ndarray
  target_label: tuple[np.ndarray, np.ndarray]
  source_label: tuple[np.ndarray, np.ndarray]
  align: np.ndarray
  aligned: np.ndarray
  cand_mask: np.ndarray
  ya: np.ndarray
  yt: np.ndarray

  @property
  def shape(self) -> tuple[int, int]:
    return self.cand_mask.shape


def _char_roles(text_len: int, spans: dict[str, tuple[int, int]], default: str) -> list[str]:
  roles = [default] * text_len
  for role, (a, b) in spans.items():
    for i in range(a, b):
      roles[i] = role
  return roles


def _suffix_roles(scorer, item, text_branch: str, suffix: str) -> list[int]:
  """Role id of each token of a branch suffix, from character spans."""
  from jaxalm.data.templates import BRANCH_EVIDENCE
  tail = scorer.layout.tail
  spans = {"answer": (len(suffix) - len(tail), len(suffix))}
  kind = BRANCH_EVIDENCE.get(text_branch)
  if kind is not None:
    ev = item.evidence[kind]
    at = suffix.find(ev)
    if at >= 0:
      start = suffix.rfind("\n", 0, at) + 1
      end = suffix.find("\n", at + len(ev))
      spans["evidence"] = (start, len(suffix) - len(tail) if end < 0 else end + 1)
  chars = _char_roles(len(suffix), spans, "instruction")
  enc = scorer.tokenizer(suffix, add_special_tokens=False, return_offsets_mapping=True)
  out = []
  for a, b in enc["offset_mapping"]:
    out.append(ROLE_ID[chars[min(a, len(suffix) - 1)]] if b > a else ROLE_ID["instruction"])
  return out


def _prefix_roles(scorer, prefix_ids: list[int]) -> list[int]:
  media = set(scorer.tokenizer.convert_tokens_to_ids([scorer.layout.media_token]))
  out, seen = [], False
  for t in prefix_ids:
    if t in media:
      seen = True
    out.append(ROLE_ID["audio"] if seen else ROLE_ID["header"])
  # the media close token(s) after the last placeholder belong to the media span
  return out


def _align(t_roles: np.ndarray, s_roles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """k-th token of each role in the target <- k-th token of that role in the source
  (the answer role is aligned from its end)."""
  align = np.zeros_like(t_roles)
  ok = np.zeros(t_roles.shape, bool)
  for r in (ROLE_ID[x] for x in ("header", "audio", "instruction", "answer", "label")):
    tp, sp = np.flatnonzero(t_roles == r), np.flatnonzero(s_roles == r)
    n = min(len(tp), len(sp))
    if n == 0:
      continue
    if r == ROLE_ID["answer"]:
      tp, sp = tp[-n:], sp[-n:]
    else:
      tp, sp = tp[:n], sp[:n]
    align[tp], ok[tp] = sp, True
  return align, ok


def build_batch(scorer, items: Sequence, target: str = "joint", source: str = "same_audio") -> PatchBatch:
  """Tokenises items into target/source rows with roles and alignment (host side)."""
  from jaxalm.branches import branch_media
  from jaxalm.data.templates import branch_text
  n_c = max(len(it.candidates) for it in items)
  seqs = {target: [], source: []}
  roles = {target: [], source: []}
  labels = {target: [], source: []}
  media = {target: [], source: []}
  for item in items:
    if item.text_answer is None:
      raise ValueError(f"item {item.id!r}: patching needs text_answer (y_t)")
    plan = scorer.plan(item, branches=(target, source))
    for bi, branch in enumerate((target, source)):
      key, text_branch = branch_media(branch)
      text = branch_text(item, text_branch, style=scorer.style)
      slot = plan.rows[bi * len(item.candidates)][0]
      suffix = scorer.layout.suffix(text, with_media=plan.media[slot] is not None)
      pre = plan.prefix_ids[slot]
      s_roles = _suffix_roles(scorer, item, text_branch, suffix)
      for c in range(n_c):
        cc = min(c, len(item.candidates) - 1)
        _, ids, start, n = plan.rows[bi * len(item.candidates) + cc]
        seqs[branch].append(pre + ids)
        roles[branch].append(_prefix_roles(scorer, pre) + s_roles + [ROLE_ID["label"]] * (len(ids) - len(s_roles)))
        labels[branch].append((len(pre) + start, n))
      media[branch].append(plan.media[slot])
  length = max(len(s) for b in seqs.values() for s in b)
  length = -(-length // 64) * 64
  out = {}
  for branch in (target, source):
    r = len(seqs[branch])
    ids = np.zeros((r, length), np.int32)
    mask = np.zeros((r, length), np.int32)
    rl = np.zeros((r, length), np.int32)
    for i, (s, ro) in enumerate(zip(seqs[branch], roles[branch])):
      ids[i, :len(s)], mask[i, :len(s)], rl[i, :len(ro)] = s, 1, ro
    inputs = {"input_ids": ids, "attention_mask": mask}
    m = [x for x in media[branch] if x is not None]
    if m:
      inputs.update(scorer.model.family.collate_media([x for x in m for _ in range(n_c)]))
    start = np.array([a for a, _ in labels[branch]], np.int32)
    ln = np.array([b for _, b in labels[branch]], np.int32)
    out[branch] = (inputs, rl, (start, ln))
  align = np.zeros_like(out[target][1])
  aligned = np.zeros(align.shape, bool)
  for i in range(align.shape[0]):
    align[i], aligned[i] = _align(out[target][1][i], out[source][1][i])
  cand_mask = np.array([[c < len(it.candidates) for c in range(n_c)] for it in items])
  ya = np.array([it.candidates.index(it.answer) for it in items])
  yt = np.array([it.candidates.index(it.text_answer) for it in items])
  return PatchBatch(list(items), out[target][0], out[source][0], out[target][1], out[source][1], out[target][2],
                    out[source][2], align, aligned, cand_mask, ya, yt)


def candidate_margins(scores: jax.Array, cand_mask: jax.Array, ya: jax.Array, yt: jax.Array):
  """Row scores [..., I*C] -> (z [..., I, C] candidate log-softmax, margins [..., I])."""
  i, c = cand_mask.shape
  s = scores.reshape(scores.shape[:-1] + (i, c))
  s = jnp.where(cand_mask, s, -jnp.inf)
  z = jax.nn.log_softmax(s, axis=-1)
  take = lambda idx: jnp.take_along_axis(z, jnp.broadcast_to(idx[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
  return z, take(ya) - take(yt)


def _scores(params, forward, inputs, label, max_label_len, patch=None, capture=()):
  out = forward(params, **inputs, capture=tuple(capture) + ("lm.final",), patch=patch)
  s = label_logprobs(params, out.captures["lm.final"], inputs["input_ids"], label[0], label[1], max_label_len)
  return s, out.captures


def source_values(params, forward, batch: PatchBatch, sites=SITES, max_label_len: int = 8):
  """Clean runs: source activations aligned onto target positions, per site [L, R, S, H],
  and the clean target and source row scores [R]."""
  return _source_values(params, batch.source, batch.source_label, batch.target, batch.target_label,
                        jnp.asarray(batch.align), forward=forward, sites=tuple(sites), max_label_len=max_label_len)


@functools.partial(jax.jit, static_argnames=("forward", "sites", "max_label_len"))
def _source_values(params, source, source_label, target, target_label, align, *, forward, sites, max_label_len):
  s_src, caps = _scores(params, forward, source, source_label, max_label_len, capture=sites)
  values = {site: jnp.take_along_axis(caps[site], align[None, :, :, None], axis=2) for site in sites}
  s_tgt, _ = _scores(params, forward, target, target_label, max_label_len)
  return values, s_tgt, s_src


@functools.partial(jax.jit, static_argnames=("forward", "sites", "max_label_len", "chunk"))
def sweep(params, batch_arrays: dict, values: dict, specs: jax.Array, *, forward: Callable,
          sites: tuple[str, ...] = SITES, max_label_len: int = 8, chunk: int | None = None):
  """Exact patching of every spec in one call.

  Args:
    batch_arrays: `arrays(batch)` (target inputs, roles, alignment, labels, candidates).
    values: {site: [L, R, S, H]} aligned source activations (`source_values`).
    specs: [K, 3] int32 rows (site index into `sites`, layer, role id).
    chunk: specs evaluated at once (vmapped); None = all at once.
  Returns:
    (z [K, I, C] patched candidate log-softmax, margins [K, I]).
  """
  t = batch_arrays
  n_layers = next(iter(values.values())).shape[0]
  layer_ids = jnp.arange(n_layers)

  def one(spec):
    site_i, layer, role = spec[0], spec[1], spec[2]
    pos = (t["roles"] == role) & t["aligned"]
    patch = {}
    for k, site in enumerate(sites):
      mask = (site_i == k) & (layer_ids == layer)[:, None, None] & pos[None]
      patch[site] = Patch(values[site], mask)
    s, _ = _scores(params, forward, t["inputs"], t["label"], max_label_len, patch=patch)
    return candidate_margins(s, t["cand_mask"], t["ya"], t["yt"])

  return jax.lax.map(one, specs, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("forward", "sites", "max_label_len"))
def attribution(params, batch_arrays: dict, values: dict, *, forward: Callable, sites=SITES, max_label_len: int = 8):
  """First-order estimate of every (site, layer, position) patch from one forward and one
  backward pass: d M_J / d alpha at alpha = 0 for x + alpha (source - x).

  Returns:
    {site: [L, R, S]} estimated margin change of each row's item.
  """
  t = batch_arrays

  def total_margin(alphas):
    patch = {site: Patch(values[site], alphas[site]) for site in sites}
    s, _ = _scores(params, forward, t["inputs"], t["label"], max_label_len, patch=patch)
    return jnp.sum(candidate_margins(s, t["cand_mask"], t["ya"], t["yt"])[1])

  zeros = {site: jnp.zeros(values[site].shape[:-1], jnp.float32) for site in sites}
  return jax.grad(total_margin)(zeros)


def arrays(batch: PatchBatch) -> dict:
  """The target-side arrays `sweep` and `attribution` take."""
  return {"inputs": batch.target, "roles": jnp.asarray(batch.target_roles), "aligned": jnp.asarray(batch.aligned),
          "label": batch.target_label, "cand_mask": jnp.asarray(batch.cand_mask), "ya": jnp.asarray(batch.ya),
          "yt": jnp.asarray(batch.yt)}


def make_specs(n_layers: int, sites: Sequence[str] = SITES, roles: Sequence[str] = PATCH_ROLES) -> np.ndarray:
  """[K, 3] (site index, layer, role id) for every site x layer x role."""
  return np.array([(si, l, ROLE_ID[r]) for si in range(len(sites)) for l in range(n_layers) for r in roles], np.int32)


def attribution_by_role(grads: dict, batch: PatchBatch, sites=SITES, roles=PATCH_ROLES) -> np.ndarray:
  """Per-item estimates [site, layer, role, I] from `attribution`'s per-position output."""
  i, c = batch.shape
  out = []
  for site in sites:
    g = np.asarray(grads[site])  # [L, R, S]
    per_role = []
    for r in roles:
      m = (batch.target_roles == ROLE_ID[r]) & batch.aligned
      per_row = (g * m[None]).sum(-1)  # [L, R]
      per_row = per_row * batch.cand_mask.reshape(-1)[None]
      per_role.append(per_row.reshape(g.shape[0], i, c).sum(-1))
    out.append(np.stack(per_role, 1))
  return np.stack(out)


def effects(m_joint: np.ndarray, m_audio: np.ndarray, prefers_ya: np.ndarray, m_patched: np.ndarray,
            specs: np.ndarray, n_layers: int, sites=SITES, roles=PATCH_ROLES) -> dict:
  """Rescue rates, displacements and their alignment (science.md section 6).

  Args:
    m_joint, m_audio: [I] clean margins M_J, M_A.
    prefers_ya: [K, I] bool, the patched target's argmax is y_a; m_patched: [K, I] patched
      margins; both for `specs` [K, 3].
  Returns:
    dict with arrays indexed [site, layer, role]: `rescue` (share of repairable items whose
    patched J prefers y_a; NaN without repairable items), `rho` (Spearman across items of
    the patch displacement M_J(patched) - M_J against the branch displacement M_A - M_J;
    NaN where the patch moves no margin), plus `rho_overall` [site, role] (pooled over
    items and the layers where the patch has an effect), `displacement`
    [site, layer, role, I], `final_displacement` [I], `repairable` [I] bool.
  """
  from jaxalm import metrics
  n_s, n_r, n_i = len(sites), len(roles), len(m_joint)
  rep = (m_audio > 0) & (m_joint < 0)
  prefers = np.asarray(prefers_ya, bool)
  rescue = np.full((n_s, n_layers, n_r), np.nan)
  disp = np.full((n_s, n_layers, n_r, n_i), np.nan)
  role_index = {ROLE_ID[r]: j for j, r in enumerate(roles)}
  for k, (si, layer, role) in enumerate(specs):
    j = role_index[int(role)]
    if rep.any():
      rescue[si, layer, j] = prefers[k][rep].mean()
    disp[si, layer, j] = m_patched[k] - m_joint
  final = m_audio - m_joint

  def rho_of(d, f):  # a patch that moves nothing has no direction: undefined, not noise
    keep = np.abs(d).max(axis=-1) > NO_EFFECT if d.ndim > 1 else None
    if keep is not None:
      d, f = d[keep], np.tile(f, (len(keep), 1))[keep]
      if not len(d):
        return np.nan
    elif np.abs(d).max() <= NO_EFFECT:
      return np.nan
    return metrics.spearman(d.ravel(), f.ravel())

  rho = np.full((n_s, n_layers, n_r), np.nan)
  rho_all = np.full((n_s, n_r), np.nan)
  for si in range(n_s):
    for j in range(n_r):
      for layer in range(n_layers):
        rho[si, layer, j] = rho_of(disp[si, layer, j], final)
      rho_all[si, j] = rho_of(disp[si, :, j], final)
  return {"rescue": rescue, "rho": rho, "rho_overall": rho_all, "displacement": disp, "final_displacement": final,
          "repairable": rep, "sites": list(sites), "roles": list(roles)}


def site_table(eff: dict) -> list[dict]:
  """[ARB] Table 2-style rows: peak rescue rate over layers per (site, role)."""
  rows = []
  for si, site in enumerate(eff["sites"]):
    for j, role in enumerate(eff["roles"]):
      r = eff["rescue"][si, :, j]
      peak = None if np.all(np.isnan(r)) else int(np.nanargmax(r))
      rows.append({"site": site, "role": role, "peak_rescue": None if peak is None else float(r[peak]),
                   "peak_layer": peak, "rho_overall": _num(eff["rho_overall"][si, j])})
  return rows


def _num(x) -> float | None:
  return None if x is None or not np.isfinite(x) else float(x)
