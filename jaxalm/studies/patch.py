"""The patching study: localise arbitration reversals (science.md section 6).

For every conflict item: clean joint (J) and same-audio (A) runs, an exact patch sweep over
sites x layers x roles (one compiled call per item batch), and the attribution-patching
estimate of every patch (one forward + one backward). Per-item results are appended to
`patch_items.jsonl` as they are computed (a killed run resumes); `results.json`,
`site_table.md` and the plots are computed from that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxalm import metrics, patching
from jaxalm.studies import common


def _records(model, scorer, items, specs, sites, roles, chunk, attribution) -> list[dict]:
  batch = patching.build_batch(scorer, items)
  values, s_j, s_a = patching.source_values(model.params, model.forward, batch, sites=sites)
  cm, ya, yt = (jnp.asarray(x) for x in (batch.cand_mask, batch.ya, batch.yt))
  _, m_j = patching.candidate_margins(s_j, cm, ya, yt)
  _, m_a = patching.candidate_margins(s_a, cm, ya, yt)
  arrays = patching.arrays(batch)
  z_p, m_p = patching.sweep(model.params, arrays, values, jnp.asarray(specs), forward=model.forward,
                            sites=sites, chunk=chunk)
  prefers = np.asarray(jnp.argmax(z_p, axis=-1) == ya[None])
  est = None
  if attribution:
    grads = patching.attribution(model.params, arrays, values, forward=model.forward, sites=sites)
    by_role = patching.attribution_by_role(grads, batch, sites=sites, roles=roles)  # [S, L, R, I]
    role_pos = {patching.ROLE_ID[r]: j for j, r in enumerate(roles)}
    est = np.stack([by_role[si, l, role_pos[int(r)]] for si, l, r in specs])  # [K, I]
  out = []
  for i, item in enumerate(items):
    rec = {"id": item.id, "task": item.task, "m_joint": float(m_j[i]), "m_audio": float(m_a[i]),
           "patched_margin": np.asarray(m_p[:, i], np.float64).round(6).tolist(),
           "patched_prefers_ya": prefers[:, i].astype(int).tolist()}
    if est is not None:
      rec["attribution"] = np.asarray(est[:, i], np.float64).round(6).tolist()
    out.append(rec)
  return out


def run(model_dir, data, out, *, data_format: str | None = None, sites: Sequence[str] = patching.SITES,
        roles: Sequence[str] = patching.PATCH_ROLES, batch_size: int = 2, chunk: int | None = None,
        attribution: bool = True, max_items: int | None = None, show_progress: bool = True,
        load_media: Callable | None = None, model=None) -> dict:
  """Runs (or resumes) the patching study and writes OUT/{patch_items.jsonl, results.json,
  site_table.md, rescue_heatmap.png, rho_by_depth.png, displacement_scatter.png}."""
  from jaxalm.branches import Scorer
  from jaxalm.data import read_items
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  model = model or common.load_model(model_dir)
  sites, roles = tuple(sites), tuple(roles)
  read = read_items(data, data_format, on_error="skip")
  skipped = list(read.skipped)
  items = []
  for it in read.items:
    if "adversarial" not in it.evidence or it.text_answer is None:
      skipped.append((it.id, "not a conflict item (needs adversarial evidence and text_answer)"))
    else:
      items.append(it)
  items = items[:max_items] if max_items else items
  n_layers = model.config.text.num_layers
  specs = patching.make_specs(n_layers, sites, roles)
  scorer = Scorer(model, ("joint", "same_audio"), load_media=load_media)
  with common.JsonlWriter(out / "patch_items.jsonl") as writer:
    todo = [it for it in items if it.id not in writer.records]
    bar = common.progress(len(items), "patching", show_progress)
    bar.update(len(items) - len(todo))
    for start in range(0, len(todo), batch_size):
      chunk_items = []
      for it in todo[start:start + batch_size]:
        try:
          scorer.plan(it)
          chunk_items.append(it)
        except (ValueError, OSError) as e:
          skipped.append((it.id, str(e)))
      if chunk_items:
        padded = chunk_items + [chunk_items[-1]] * (batch_size - len(chunk_items))  # one compiled shape
        for rec in _records(model, scorer, padded, specs, sites, roles, chunk, attribution)[:len(chunk_items)]:
          writer.write(rec)
      bar.update(len(todo[start:start + batch_size]))
    bar.close()
    records = [writer.records[it.id] for it in items if it.id in writer.records]
  results = summarize(records, specs, n_layers, sites, roles)
  results["skipped"] = common.skipped_list(skipped)
  results["model"] = str(model_dir)
  common.write_json(out / "results.json", results)
  (out / "site_table.md").write_text(site_table_markdown(results["site_table"]))
  plot(results, records, out)
  return results


def summarize(records: list[dict], specs: np.ndarray, n_layers: int, sites, roles) -> dict:
  """Aggregates per-item records into rescue rates, rho curves and the site table."""
  if not records:
    return {"n_items": 0, "site_table": []}
  m_j = np.array([r["m_joint"] for r in records])
  m_a = np.array([r["m_audio"] for r in records])
  m_p = np.array([r["patched_margin"] for r in records]).T
  prefers = np.array([r["patched_prefers_ya"] for r in records], bool).T
  eff = patching.effects(m_j, m_a, prefers, m_p, specs, n_layers, sites, roles)
  out = {
      "n_items": len(records), "n_repairable": int(eff["repairable"].sum()),
      "repairable_rate": metrics.percent(eff["repairable"]),
      "sites": list(sites), "roles": list(roles), "n_layers": n_layers,
      "rescue": _nested(eff["rescue"]), "rho": _nested(eff["rho"]),
      "site_table": patching.site_table(eff),
  }
  if all("attribution" in r for r in records):
    est = np.array([r["attribution"] for r in records]).T  # [K, I]
    exact = m_p - m_j[None]
    out["attribution_vs_exact_spearman"] = common.finite(metrics.spearman(est.ravel(), exact.ravel()))
  return out


def _nested(a: np.ndarray):
  return [[[common.finite(x) for x in row] for row in layer] for layer in a]


def site_table_markdown(rows: list[dict]) -> str:
  lines = ["| site | role | peak rescue | layer | rho (pooled) |", "|---|---|---|---|---|"]
  for r in rows:
    fmt = lambda x, f: "-" if x is None else format(x, f)
    lines.append(f"| {r['site']} | {r['role']} | {fmt(r['peak_rescue'], '.2f')} | {fmt(r['peak_layer'], 'd')} | "
                 f"{fmt(r['rho_overall'], '.2f')} |")
  return "\n".join(lines) + "\n"


def plot(results: dict, records: list[dict], out: Path) -> None:
  """rescue_heatmap.png (site x layer per role), rho_by_depth.png, displacement_scatter.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  if not records:
    return
  sites, roles, n_layers = results["sites"], results["roles"], results["n_layers"]
  rescue = np.array(results["rescue"], dtype=float)
  fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles) + 2, 0.6 * len(sites) + 2), squeeze=False,
                           sharey=True, layout="constrained")
  for j, role in enumerate(roles):
    ax = axes[0, j]
    im = ax.imshow(rescue[:, :, j], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_title(f"rescue rate: {role}")
    if j == 0:
      ax.set_yticks(range(len(sites)), sites)
    ax.set_xticks(range(n_layers))
    ax.set_xlabel("layer")
  fig.colorbar(im, ax=axes.ravel().tolist())
  fig.savefig(out / "rescue_heatmap.png", dpi=100)
  plt.close(fig)
  rho = np.array(results["rho"], dtype=float)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for si, site in enumerate(sites):
    ax.plot(np.arange(n_layers), rho[si, :, roles.index("answer") if "answer" in roles else 0], marker="o", label=site)
  ax.set_xlabel("layer")
  ax.set_ylabel("Spearman rho")
  ax.set_title("answer-side patch vs branch displacement", fontsize=9)
  ax.set_ylim(-1.05, 1.05)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out / "rho_by_depth.png", dpi=100)
  plt.close(fig)
  specs = patching.make_specs(n_layers, sites, roles)
  k = next(i for i, (si, l, r) in enumerate(specs)
           if sites[si] == sites[-1] and l == n_layers - 1 and patching.ROLES[r] == roles[-1])
  m_j = np.array([r["m_joint"] for r in records])
  final = np.array([r["m_audio"] for r in records]) - m_j
  disp = np.array([r["patched_margin"][k] for r in records]) - m_j
  fig, ax = plt.subplots(figsize=(4.5, 4))
  ax.scatter(final, disp, s=12)
  ax.set_xlabel("final branch displacement M_A - M_J")
  ax.set_ylabel(f"patch displacement ({sites[-1]}, layer {n_layers - 1}, {roles[-1]})")
  fig.tight_layout()
  fig.savefig(out / "displacement_scatter.png", dpi=100)
  plt.close(fig)
