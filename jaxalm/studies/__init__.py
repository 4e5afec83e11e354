"""Studies that run a model over a benchmark file and write per-item results, a summary and plots.

  arbitration  [ARB] diagnostics, corrections under a faithfulness budget, nAUC (science.md 3-5)
  text_prior   [TP] text prior, retention and the TS/FS/XS/AH/UN decomposition (science.md 7)
"""

from jaxalm.studies.arbitration import run_arbitration
from jaxalm.studies.text_prior import run_text_prior

__all__ = ["run_arbitration", "run_text_prior"]
