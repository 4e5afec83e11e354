"""Generation-time GACL (science.md section 4): prefix-trie constrained short-label
generation ([ARB] "G2") and free-form generation, corrected per step.

The joint branch J and the same-audio branch A of each item decode side by side, each with
its own kv cache. At every step the next-token logits of both are restricted to the tokens
a prefix trie of the candidate labels allows (constrained mode; none in free-form mode),
log-softmaxed over that set, combined by `correction.gacl_step`, and the argmax token is
appended to BOTH branches. A row stops at the end of a label (constrained) or at eos
(free-form). Prefill and the whole decoding loop are one jitted call.

Host side:
  build_trie(tokenizer, candidates)     label token ids (as after the assistant header) -> Trie
  label_index / label_of(trie, tokens)  generated ids -> candidate index (-1) / label (None)
Device side (a `lax.while_loop` that exits once every row has stopped):
  gacl_generate(model, joint_inputs, audio_inputs, trie=...)   J and A from full prompts
  constrained_generate(model, joint_inputs, trie=...)          J alone (the baseline)
Items:
  decode_items(scorer_or_model, items, mode="gacl"|"joint")    prompts from `Scorer.plan`,
    the audio prefix run once per item and its cache gathered onto the J and A rows;
    returns a `Decoded` (label, whether the gate fired, tokens, alphas) per item.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxalm import correction, prompts
from jaxalm.nn.decoder import lm_head
from jaxalm.nn.kv_cache import init_cache
from jaxalm.scoring import gather_cache

# The text a candidate label follows in every chat layout (`prompts.Layout.tail`).
ASSISTANT_HEADER = prompts.LAYOUTS["qwen2_audio"].tail


# ------------------------------------------------------------------------------- trie

@dataclasses.dataclass(frozen=True)
class Trie:
  """Prefix trie of one candidate set's label token ids; node 0 is the root.

  Attributes:
    tokens: [N, K] int32 allowed next tokens of each node (-1 padding).
    children: [N, K] int32 the node each of those tokens leads to (-1 padding).
    label: [N] int32 candidate index whose label ends at the node, -1 elsewhere; such
      nodes have no children (a label that is a proper prefix of another one is
      followed by `end_token_id`).
    labels: the candidate strings.
    label_ids: each label's token ids, the terminator included where one was added.
    end_token_id: the terminator (None if no label needed one).
  """
  tokens: np.ndarray
  children: np.ndarray
  label: np.ndarray
  labels: tuple[str, ...]
  label_ids: tuple[tuple[int, ...], ...]
  end_token_id: int | None = None

  @property
  def depth(self) -> int:
    """Tokens of the longest label (the decoding steps constrained mode needs)."""
    return max(len(ids) for ids in self.label_ids)


def default_end_token(tokenizer) -> int | None:
  """`<|im_end|>` where the vocabulary has it, else the tokenizer's eos."""
  vocab = tokenizer.get_vocab()
  return vocab.get("<|im_end|>", tokenizer.eos_token_id)


def label_token_ids(tokenizer, candidates: Sequence[str], context: str = ASSISTANT_HEADER) -> list[list[int]]:
  """Token ids of each candidate as it tokenises right after `context` (as `Scorer.plan`
  tokenises prompt + candidate and keeps the continuation)."""
  ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
  out = []
  for cand in candidates:
    ids = tokenizer(context + cand, add_special_tokens=False)["input_ids"]
    if ids[:len(ctx)] != ctx or len(ids) == len(ctx):
      raise ValueError(f"candidate {cand!r} does not tokenise as a continuation of {context[-20:]!r}")
    out.append(ids[len(ctx):])
  return out


def trie_from_ids(label_ids: Sequence[Sequence[int]], labels: Sequence[str] | None = None,
                  end_token_id: int | None = None) -> Trie:
  """A Trie over given label token ids (`labels` default to the ids' reprs)."""
  ids = [tuple(int(t) for t in x) for x in label_ids]
  labels = tuple(str(x) for x in ids) if labels is None else tuple(labels)
  if len(labels) != len(ids) or not ids or any(not x for x in ids):
    raise ValueError("need one non-empty token sequence per label")
  if len(set(ids)) != len(ids):
    raise ValueError(f"labels {labels} tokenise to duplicate sequences")
  full = []
  for i, x in enumerate(ids):
    if any(j != i and len(y) > len(x) and y[:len(x)] == x for j, y in enumerate(ids)):
      if end_token_id is None:
        raise ValueError(f"label {labels[i]!r} is a prefix of another label; give an end_token_id")
      x = x + (int(end_token_id),)
    full.append(x)
  if len(set(full)) != len(full):
    raise ValueError(f"labels {labels} collide once terminated by {end_token_id}")
  edges: list[dict[int, int]] = [{}]
  ends = {}
  for i, x in enumerate(full):
    node = 0
    for t in x:
      if t not in edges[node]:
        edges[node][t] = len(edges)
        edges.append({})
      node = edges[node][t]
    ends[node] = i
  n, k = len(edges), max(len(e) for e in edges)
  tokens = np.full((n, k), -1, np.int32)
  children = np.full((n, k), -1, np.int32)
  label = np.full((n,), -1, np.int32)
  for node, e in enumerate(edges):
    for j, (t, child) in enumerate(sorted(e.items())):
      tokens[node, j], children[node, j] = t, child
  for node, i in ends.items():
    label[node] = i
  used = end_token_id if any(len(a) != len(b) for a, b in zip(full, ids)) else None
  return Trie(tokens, children, label, labels, tuple(full), used)


def build_trie(tokenizer, candidates: Sequence[str], *, context: str = ASSISTANT_HEADER,
               end_token_id: int | None = None) -> Trie:
  """The prefix trie of a candidate set, tokenised as continuations of `context`.

  Args:
    tokenizer: a HF tokenizer.
    candidates: the label strings.
    context: the text labels follow (default: the assistant header).
    end_token_id: terminator of labels that are prefixes of others (default
      `default_end_token(tokenizer)`).
  """
  end = default_end_token(tokenizer) if end_token_id is None else end_token_id
  return trie_from_ids(label_token_ids(tokenizer, candidates, context), candidates, end)


def _round_up(n: int, m: int) -> int:
  return max(m, -(-n // m) * m)


def stack_tries(tries: Sequence[Trie], n_nodes: int | None = None, width: int | None = None) -> dict:
  """Pads tries to one shape: {tokens, children [B, N, K], label [B, N]} (numpy)."""
  n = max(t.tokens.shape[0] for t in tries) if n_nodes is None else n_nodes
  k = max(t.tokens.shape[1] for t in tries) if width is None else width
  out = {"tokens": np.full((len(tries), n, k), -1, np.int32), "children": np.full((len(tries), n, k), -1, np.int32),
         "label": np.full((len(tries), n), -1, np.int32)}
  for i, t in enumerate(tries):
    a, b = t.tokens.shape
    out["tokens"][i, :a, :b] = t.tokens
    out["children"][i, :a, :b] = t.children
    out["label"][i, :a] = t.label
  return out


def label_index(trie: Trie, tokens: Iterable[int]) -> int:
  """The candidate index a generated sequence spells (-1 if it leaves the trie or stops
  before the end of a label); tokens after the label's end are ignored."""
  node = 0
  for tok in tokens:
    hit = np.nonzero(trie.tokens[node] == int(tok))[0]
    if len(hit) == 0:
      return -1
    node = int(trie.children[node, hit[0]])
    if trie.label[node] >= 0:
      return int(trie.label[node])
  return -1


def label_of(trie: Trie, tokens: Iterable[int]) -> str | None:
  """The candidate string a generated sequence spells, or None."""
  i = label_index(trie, tokens)
  return None if i < 0 else trie.labels[i]


# ------------------------------------------------------------------------------- loop

def _allowed(trie: dict, node: jax.Array, vocab: int):
  """Allowed-token mask [B, V] and (tokens, children) [B, K] at each row's node."""
  toks = jnp.take_along_axis(trie["tokens"], node[:, None, None], axis=1)[:, 0]
  kids = jnp.take_along_axis(trie["children"], node[:, None, None], axis=1)[:, 0]
  rows = jnp.arange(node.shape[0])[:, None]
  mask = jnp.zeros((node.shape[0], vocab), bool).at[rows, jnp.where(toks >= 0, toks, vocab)].set(True, mode="drop")
  return mask, toks, kids


@functools.partial(jax.jit, static_argnames=("forward", "cache_layout", "max_new_tokens", "n_branches",
                                             "return_logits"))
def _decode(params: Any, prefix: dict, rows: dict | None, trie: dict | None, hp: dict, *, forward: Callable,
            cache_layout: tuple, max_new_tokens: int, n_branches: int, return_logits: bool = False):
  """Prefill + decoding loop.

  Args:
    prefix: HF-named inputs. Without `rows`: the whole prompts, [nb * B, S], branch-major
      (rows 0..B-1 are J, B..2B-1 are A). With `rows`: shared prefixes [Np, P].
    rows: None, or input_ids / attention_mask [nb * B, T] (branch-major suffixes, right
      padded) and prefix_index [nb * B].
    trie: None (free-form) or stacked trie arrays [B, N, K], [B, N].
    hp: lam, tau, alpha_max (float), eos, pad (int) scalars.
    n_branches: 1 (J alone, no correction) or 2 (J and A, GACL).
  Returns:
    tokens [B, T] int32, alphas [B, T] float32 and, with return_logits, the per-step
    logits [nb, B, T, V] the decisions were made from.
  """
  layers, kv_heads, head_dim, dtype = cache_layout
  steps = max_new_tokens
  if rows is None:
    n, s = prefix["input_ids"].shape
    cache = init_cache(layers, n, s + steps, kv_heads, head_dim, jnp.dtype(dtype))
    out = forward(params, **prefix, cache=cache, capture=("lm.final",))
    mask = prefix.get("attention_mask", jnp.ones((n, s), jnp.int32))
  else:
    n_p, p = prefix["input_ids"].shape
    n, s = rows["input_ids"].shape
    cache = init_cache(layers, n_p, p + s + steps, kv_heads, head_dim, jnp.dtype(dtype))
    cache = forward(params, **prefix, cache=cache).cache
    rows_cache = gather_cache(cache, rows["prefix_index"])
    if "rope_delta" in cache:  # Qwen3-VL: text after an image continues at shifted positions
      rows_cache["rope_delta"] = cache["rope_delta"][rows["prefix_index"]]
    out = forward(params, input_ids=rows["input_ids"], attention_mask=rows["attention_mask"], cache=rows_cache,
                  capture=("lm.final",))
    mask = rows["attention_mask"]
  last = s - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=1)  # last real token (right or left padding)
  if "lm.final" in out.captures:  # the head at the last tokens only (full prompt logits are [n, s, V])
    logits = lm_head(params, out.captures["lm.final"][jnp.arange(n), last][:, None])[:, 0]
  else:
    logits = out.logits[jnp.arange(n), last]
  vocab = logits.shape[-1]
  b = n // n_branches
  lam, tau, alpha_max = (jnp.asarray(hp[k], jnp.float32) for k in ("lam", "tau", "alpha_max"))
  eos, pad = jnp.asarray(hp["eos"], jnp.int32), jnp.asarray(hp["pad"], jnp.int32)

  def body(c):
    lg = c["logits"].reshape(n_branches, b, vocab)
    mask = None
    if trie is not None:
      mask, toks, kids = _allowed(trie, c["node"], vocab)
    if n_branches == 2:
      scores, alpha = correction.gacl_step(lg[0], lg[1], mask, lam, tau, alpha_max, return_alpha=True)
    else:
      scores, alpha = correction.candidate_log_softmax(lg[0], mask), jnp.zeros((b,), jnp.float32)
    done = c["done"]
    tok = jnp.where(done, pad, jnp.argmax(scores, axis=-1).astype(jnp.int32))
    alpha = jnp.where(done, 0.0, alpha)
    node = c["node"]
    if trie is not None:
      child = jnp.max(jnp.where(toks == tok[:, None], kids, -1), axis=-1)
      node = jnp.where(done, node, jnp.maximum(child, 0))
      new_done = done | (jnp.take_along_axis(trie["label"], node[:, None], axis=1)[:, 0] >= 0) | (child < 0)
    else:
      new_done = done | (tok == eos)
    step = forward(params, input_ids=jnp.tile(tok, n_branches)[:, None],
                   attention_mask=jnp.ones((n, 1), jnp.int32), cache=c["cache"])
    t = c["t"]
    new = {"t": t + 1, "cache": step.cache, "logits": step.logits[:, 0], "node": node, "done": new_done,
           "tokens": c["tokens"].at[:, t].set(tok), "alphas": c["alphas"].at[:, t].set(alpha)}
    if return_logits:
      new["trace"] = jax.lax.dynamic_update_index_in_dim(c["trace"], lg, t, axis=2)
    return new

  carry = {"t": jnp.zeros((), jnp.int32), "cache": out.cache, "logits": logits, "node": jnp.zeros((b,), jnp.int32),
           "done": jnp.zeros((b,), bool), "tokens": jnp.full((b, steps), pad, jnp.int32),
           "alphas": jnp.zeros((b, steps), jnp.float32)}
  if return_logits:
    carry["trace"] = jnp.zeros((n_branches, b, steps, vocab), jnp.float32)
  carry = jax.lax.while_loop(lambda c: (c["t"] < steps) & ~jnp.all(c["done"]), body, carry)
  if return_logits:
    return carry["tokens"], carry["alphas"], carry["trace"]
  return carry["tokens"], carry["alphas"]


def _layout(model, params) -> tuple:
  cfg = model.config.text
  return (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, str(jnp.dtype(jax.tree.leaves(params)[0].dtype)))


def _check_vocab(model, tries: Sequence[Trie]) -> None:
  vocab = getattr(model.config.text, "vocab_size", None)
  if vocab is not None and any(int(t.tokens.max()) >= vocab for t in tries):
    raise ValueError(f"a trie holds token ids beyond the model's vocabulary ({vocab})")


def _trie_arrays(model, trie, batch: int) -> dict | None:
  if trie is None:
    return None
  tries = [trie] * batch if isinstance(trie, Trie) else list(trie)
  if len(tries) != batch:
    raise ValueError(f"{len(tries)} tries for {batch} rows")
  _check_vocab(model, tries)
  return stack_tries(tries)


def _steps(trie, max_new_tokens: int | None) -> int:
  if max_new_tokens is not None:
    return int(max_new_tokens)
  if trie is None:
    raise ValueError("free-form generation needs max_new_tokens")
  return max(t.depth for t in ([trie] if isinstance(trie, Trie) else trie))


def _hp(lam, tau, alpha_max, eos_token_id, pad_token_id) -> dict:
  eos = -1 if eos_token_id is None else int(eos_token_id)
  pad = (eos if eos >= 0 else 0) if pad_token_id is None else int(pad_token_id)
  return {"lam": np.float32(lam), "tau": np.float32(tau), "alpha_max": np.float32(alpha_max),
          "eos": np.int32(eos), "pad": np.int32(pad)}


def _pad_cat(inputs: Sequence[dict]) -> dict:
  """Concatenates HF-named input dicts on the batch axis, right-padding token arrays."""
  s = max(np.shape(x["input_ids"])[1] for x in inputs)
  out = {}
  for key in ("input_ids", "attention_mask"):
    parts = []
    for x in inputs:
      a = np.asarray(x["input_ids"] if key == "input_ids" else x.get("attention_mask", np.ones_like(x["input_ids"])))
      parts.append(np.pad(a, ((0, 0), (0, s - a.shape[1]))))
    out[key] = np.concatenate(parts).astype(np.int32)
  media = [k for k in inputs[0] if k not in ("input_ids", "attention_mask") and inputs[0][k] is not None]
  for key in media:
    out[key] = np.concatenate([np.asarray(x[key]) for x in inputs])
  return out


def gacl_generate(model, joint_inputs: dict, audio_inputs: dict, *, trie: Trie | Sequence[Trie] | None = None,
                  max_new_tokens: int | None = None, lam: float = 0.5, tau: float = 0.5, alpha_max: float = 1.0,
                  eos_token_id: int | None = None, pad_token_id: int | None = None, params=None,
                  return_logits: bool = False):
  """Generation-time GACL over the joint branch J and the same-audio branch A.

  Args:
    model: a `jaxalm.Model`.
    joint_inputs, audio_inputs: HF-named inputs of the J and A prompts of the same B items
      (input_ids / attention_mask [B, S_J] and [B, S_A], media inputs of each).
    trie: a Trie (all rows) or one per row: constrained short-label generation; None:
      free-form generation.
    max_new_tokens: decoding steps (default: the trie's depth; required free-form).
    lam, tau, alpha_max: the GACL gate (science.md section 4).
    eos_token_id: free-form stop token (None: never stop).
    pad_token_id: written after a row stops (default eos, else 0).
    return_logits: also return the per-step logits [2, B, T, V] of J and A.
  Returns:
    (tokens [B, T] int32, alphas [B, T] float32 per-step gate; 0 after a row stops).
  """
  b = np.shape(joint_inputs["input_ids"])[0]
  if np.shape(audio_inputs["input_ids"])[0] != b:
    raise ValueError("joint_inputs and audio_inputs need the same batch size")
  params = model.params if params is None else params
  return _decode(params, _pad_cat([joint_inputs, audio_inputs]), None, _trie_arrays(model, trie, b),
                 _hp(lam, tau, alpha_max, eos_token_id, pad_token_id), forward=model.forward,
                 cache_layout=_layout(model, params), max_new_tokens=_steps(trie, max_new_tokens), n_branches=2,
                 return_logits=return_logits)


def constrained_generate(model, joint_inputs: dict, *, trie: Trie | Sequence[Trie] | None,
                         max_new_tokens: int | None = None, eos_token_id: int | None = None,
                         pad_token_id: int | None = None, params=None, return_logits: bool = False):
  """Plain joint decoding (no correction) over a trie (or free-form with trie=None).

  Returns (tokens [B, T], alphas [B, T] all zero), as `gacl_generate`.
  """
  b = np.shape(joint_inputs["input_ids"])[0]
  params = model.params if params is None else params
  return _decode(params, _pad_cat([joint_inputs]), None, _trie_arrays(model, trie, b),
                 _hp(0.0, 0.5, 1.0, eos_token_id, pad_token_id), forward=model.forward,
                 cache_layout=_layout(model, params), max_new_tokens=_steps(trie, max_new_tokens), n_branches=1,
                 return_logits=return_logits)


# ------------------------------------------------------------------------------ items

@dataclasses.dataclass
class Decoded:
  """One item's decoding.

  Attributes:
    item_id: the item's id.
    label: the candidate the tokens spell (None if they spell none).
    index: its index in the item's candidates (-1 if none).
    fired: whether the GACL gate moved any step (alpha > 0).
    tokens: [T] generated ids up to and including the label end / eos.
    alphas: [T] per-step alpha.
    text: the decoded tokens.
  """
  item_id: str
  label: str | None
  index: int
  fired: bool
  tokens: np.ndarray
  alphas: np.ndarray
  text: str


def _scorer(scorer_or_model, branches, load_media, batch_size):
  from jaxalm.branches import Scorer
  if isinstance(scorer_or_model, Scorer):
    return scorer_or_model
  return Scorer(scorer_or_model, branches, batch_size=batch_size or 8, load_media=load_media)


def decode_items(scorer_or_model, items: Iterable, mode: str = "gacl", *, constrained: bool = True,
                 joint_branch: str = "joint", reference_branch: str = "same_audio", lam: float = 0.5,
                 tau: float = 0.5, alpha_max: float = 1.0, max_new_tokens: int | None = None,
                 eos_token_id: int | None = None, batch_size: int | None = None,
                 load_media: Callable | None = None) -> list[Decoded]:
  """Decodes items with the J (and A) prompts of `Scorer.plan`.

  Each item's audio prefix runs once; its cache is gathered onto the J and A suffix rows.
  Constrained mode decodes over the trie of the item's candidates, tokenised exactly as
  `Scorer.plan` tokenises them for candidate scoring.

  Args:
    scorer_or_model: a `jaxalm.branches.Scorer` (its params, style, media loader and batch
      size are used) or a `jaxalm.Model`.
    items: `jaxalm.data.schema.Item`s.
    mode: "gacl" (J corrected by A) or "joint" (J alone).
    constrained: trie-constrained labels (True) or free-form generation.
    joint_branch, reference_branch: the branches playing J and A (e.g. joint_branch=
      "faithful" for the faithfulness condition).
    max_new_tokens: default each batch's deepest trie (constrained); required free-form.
    eos_token_id: free-form stop (default the tokenizer's eos).
    batch_size, load_media: used when a Model is given.
  Returns:
    One `Decoded` per item, in order.
  """
  if mode not in ("gacl", "joint"):
    raise ValueError(f"mode must be 'gacl' or 'joint', got {mode!r}")
  branches = (joint_branch, reference_branch) if mode == "gacl" else (joint_branch,)
  scorer = _scorer(scorer_or_model, branches, load_media, batch_size)
  tok = scorer.tokenizer
  if not constrained and max_new_tokens is None:
    raise ValueError("free-form decoding needs max_new_tokens")
  eos = tok.eos_token_id if eos_token_id is None else eos_token_id
  end = default_end_token(tok)
  hp = _hp(lam, tau, alpha_max, None if constrained else eos, tok.pad_token_id)
  results, chunk = [], []
  items = list(items)
  for k, item in enumerate(items):
    chunk.append(_item_plan(scorer, item, branches, end))
    if len(chunk) < scorer.batch_size and k < len(items) - 1:
      continue
    # Steps: max_new_tokens, else the batch's deepest trie (rounded up: fewer compiled shapes).
    steps = max_new_tokens if max_new_tokens is not None else _round_up(max(t.depth for _, _, t in chunk), 4)
    padded = chunk + [chunk[-1]] * (scorer.batch_size - len(chunk))  # one compiled shape for every batch
    tokens, alphas = _run_plans(scorer, padded, hp, steps, len(branches), constrained)
    for (plan, _, trie), t, a in zip(chunk, tokens, alphas):
      idx = label_index(trie, t)
      if not constrained:
        idx = next((i for i, ids in enumerate(trie.label_ids) if _spells(t, ids, eos)), -1)
      n = _length(t, trie, idx, eos, constrained)
      results.append(Decoded(plan.item.id, None if idx < 0 else plan.item.candidates[idx], idx,
                             bool(np.any(a[:n] > 0)), t[:n], a[:n], tok.decode(t[:n])))
    chunk = []
  return results


def _spells(tokens: np.ndarray, ids: Sequence[int], eos: int) -> bool:
  """Free-form output equal to a label's ids, then eos (or the end of the output)."""
  n = len(ids)
  return list(tokens[:n]) == list(ids) and (len(tokens) == n or tokens[n] == eos)


def _length(tokens: np.ndarray, trie: Trie, idx: int, eos: int, constrained: bool) -> int:
  if constrained:
    return len(trie.label_ids[idx]) if idx >= 0 else len(tokens)
  hit = np.nonzero(tokens == eos)[0]
  return int(hit[0]) + 1 if len(hit) else len(tokens)


def _item_plan(scorer, item, branches, end_token_id):
  """(plan, branch suffix ids, trie) of one item, the trie from the plan's own label ids."""
  plan = scorer.plan(item, branches=branches)
  c = len(item.candidates)
  suffixes, labels = [], None
  for i in range(len(branches)):
    rows = plan.rows[i * c:(i + 1) * c]
    suffixes.append((rows[0][0], rows[0][1][:rows[0][2]]))
    ids = [r[1][r[2]:r[2] + r[3]] for r in rows]
    if labels is not None and ids != labels:
      raise ValueError(f"item {item.id!r}: candidates tokenise differently after the J and A prompts")
    labels = ids
  return plan, suffixes, trie_from_ids(labels, item.candidates, end_token_id)


def _run_plans(scorer, plans, hp, steps, n_branches, constrained, return_logits=False):
  """One compiled call over a batch of item plans (rows branch-major)."""
  b = len(plans)
  flat = [dataclasses.replace(p, rows=[(slot, ids, len(ids), 0) for slot, ids in s]) for p, s, _ in plans]
  prefix, rows, _ = scorer.collate(flat)
  # collate orders rows item-major; _decode wants branch-major.
  order = np.arange(b * n_branches).reshape(b, n_branches).T.reshape(-1)
  rows = {k: rows[k][order] for k in ("input_ids", "attention_mask", "prefix_index")}
  tries = [t for _, _, t in plans]
  arrays = None
  if constrained:
    _check_vocab(scorer.model, tries)
    arrays = stack_tries(tries, _round_up(max(t.tokens.shape[0] for t in tries), 8),
                         _round_up(max(t.tokens.shape[1] for t in tries), 4))
  out = _decode(scorer.params, prefix, rows, arrays, hp, forward=scorer.model.forward,
                cache_layout=_layout(scorer.model, scorer.params), max_new_tokens=int(steps),
                n_branches=n_branches, return_logits=return_logits)
  out = tuple(np.asarray(x) for x in out)
  if return_logits:
    return out[0], out[1], out[2], prefix, rows
  return out
