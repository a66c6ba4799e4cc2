"""One training recipe per model."""
