"""LungLens viewer package."""
