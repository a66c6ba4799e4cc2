"""Training: datasets, the shared loop pieces and one recipe per model."""
