"""Runnable studies built on jaxalm."""
