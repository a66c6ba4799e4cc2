"""LungLens resources package."""
