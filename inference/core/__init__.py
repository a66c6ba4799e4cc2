"""Shared inference types and helpers: progress and cancel, errors, device choice, metrics, predictions."""
