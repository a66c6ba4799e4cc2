"""LungLens inference package."""
