"""LungLens app package."""
