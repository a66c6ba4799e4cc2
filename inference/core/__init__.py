"""Shared inference types and helpers: progress, cancel and errors (types), device choice, metrics, predictions."""
