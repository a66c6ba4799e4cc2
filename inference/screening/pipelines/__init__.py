"""One screening pipeline per model family."""
