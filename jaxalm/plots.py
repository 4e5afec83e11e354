"""Figures of the studies, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _figure(width: float = 5.0, height: float = 4.0):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), dpi=120)
  FigureCanvasAgg(fig)
  return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path) -> Path:
  path = Path(path)
  fig.tight_layout()
  fig.savefig(path, format="png")
  return path


def margin_scatter(m_a: Sequence[float], m_j: Sequence[float], path, title: str = "") -> Path:
  """M_A (x) against M_J (y) per adversarial item, the repairable quadrant (M_A > 0, M_J < 0) shaded.

  Args:
    m_a, m_j: [n] same-audio and joint margins z(y_a) - z(y_t).
  """
  m_a, m_j = np.asarray(m_a, float), np.asarray(m_j, float)
  fig, ax = _figure()
  lim = max(1.0, float(np.abs(np.concatenate([m_a, m_j])).max(initial=0.0)) * 1.1)
  ax.fill_between([0, lim], -lim, 0, color="tab:orange", alpha=0.15, lw=0,
                  label="repairable quadrant (M_A > 0, M_J < 0)")
  ax.axhline(0, color="0.4", lw=0.8)
  ax.axvline(0, color="0.4", lw=0.8)
  rep = (m_a > 0) & (m_j < 0)
  ax.scatter(m_a[~rep], m_j[~rep], s=14, color="tab:blue", alpha=0.7, label="other")
  ax.scatter(m_a[rep], m_j[rep], s=14, color="tab:red", alpha=0.8, label=f"repairable ({int(rep.sum())}/{len(rep)})")
  ax.set_xlim(-lim, lim)
  ax.set_ylim(-lim, lim)
  ax.set_xlabel("M_A (same audio, no evidence)")
  ax.set_ylabel("M_J (joint, adversarial evidence)")
  ax.set_title(title or "Arbitration margins")
  ax.legend(loc="upper left", fontsize=7)
  return _save(fig, path)


def frontier_plot(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], path,
                  points: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                  budget: float | None = None, title: str = "") -> Path:
  """Rescue/faithfulness frontier per method: best conflict gain (pp) within a faithful-drop budget (pp).

  Args:
    curves: method -> (budgets [m], frontier gains [m]).
    points: optional method -> (faithful drops [k], conflict gains [k]) of its grid.
    budget: optional selection budget, drawn as a vertical line.
  """
  fig, ax = _figure(5.5, 4.0)
  colors, right, left = {}, 0.0, 0.0
  for i, (method, (b, g)) in enumerate(curves.items()):
    line, = ax.step(b, g, where="post", label=method, lw=max(0.8, 2.6 - 0.45 * i))  # overlaps stay visible
    colors[method] = line.get_color()
    right = max(right, float(np.max(b, initial=0.0)))
  for method, (d, g) in (points or {}).items():
    ax.scatter(d, g, s=8, alpha=0.4, color=colors.get(method))
    left = min(left, float(np.nanmin(d, initial=0.0)))
  if curves:
    ax.set_xlim(left - 0.5, right + 0.5)
  if budget is not None:
    ax.axvline(budget, color="0.5", ls="--", lw=0.8)
  if not curves:
    ax.text(0.5, 0.5, "no operating points\n(needs adversarial and faithful items)", ha="center", va="center",
            transform=ax.transAxes)
  ax.axhline(0, color="0.4", lw=0.8)
  ax.set_xlabel("faithful drop budget (pp)")
  ax.set_ylabel("conflict gain (pp)")
  ax.set_title(title or "Rescue / faithfulness frontier")
  if curves:
    ax.legend(fontsize=7)
  return _save(fig, path)


def decomposition_bar(shares: Mapping[str, float], path, counts: Mapping[str, int] | None = None,
                      title: str = "") -> Path:
  """Bar chart of the [TP] categories' shares (%)."""
  fig, ax = _figure()
  names = list(shares)
  vals = [0.0 if shares[k] is None else float(shares[k]) for k in names]
  palette = ["tab:gray", "tab:green", "tab:purple", "tab:red", "tab:brown", "tab:olive"]
  bars = ax.bar(names, vals, color=[palette[i % len(palette)] for i in range(len(names))])
  if counts is not None:
    for bar, k in zip(bars, names):
      ax.annotate(str(counts.get(k, 0)), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                  ha="center", va="bottom", fontsize=7)
  ax.set_ylabel("share of items (%)")
  ax.set_title(title or "Text prior decomposition")
  return _save(fig, path)


def retention_plot(retention: Mapping[int, float | None], path, text_prior_rate: float | None = None,
                   title: str = "") -> Path:
  """R_N (%) against the number of fragments N, with R_TP as a reference line."""
  fig, ax = _figure()
  ns = sorted(retention)
  vals = [np.nan if retention[n] is None else retention[n] for n in ns]
  ax.plot(ns, vals, marker="o", label="R_N (fragment retention)")
  if text_prior_rate is not None:
    ax.axhline(text_prior_rate, color="tab:red", ls="--", lw=0.8, label="R_TP (no audio)")
  ax.axhline(100, color="0.5", lw=0.6)
  ax.set_xticks(ns)
  ax.set_xlabel("N (fragments)")
  ax.set_ylabel("accuracy relative to full audio (%)")
  ax.set_title(title or "Fragment retention")
  ax.legend(fontsize=7)
  return _save(fig, path)
