"""Reproductions from the published [ARB] per-sample data (shared/reference/gacl)."""
