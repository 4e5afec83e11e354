"""Benchmark items and readers for local benchmark files (MCR-Bench, ALME, MMAU, MC2)."""

from jaxalm.data.readers import (FORMATS, TASK_CANDIDATES, DataError, ReadResult, assign_splits,
                                 infer_format, load_split_ids, read_alme, read_items, read_mc2,
                                 read_mcr, read_mmau)
from jaxalm.data.schema import EVIDENCE_KINDS, MODALITIES, FrozenMap, Item, ItemError
from jaxalm.data.templates import BRANCH_EVIDENCE, BRANCHES, STYLES, branch_text, default_style

__all__ = [
    "BRANCHES", "BRANCH_EVIDENCE", "EVIDENCE_KINDS", "FORMATS", "MODALITIES", "STYLES",
    "TASK_CANDIDATES", "DataError", "FrozenMap", "Item", "ItemError", "ReadResult",
    "assign_splits", "branch_text", "default_style", "infer_format", "load_split_ids",
    "read_alme", "read_items", "read_mc2", "read_mcr", "read_mmau",
]
