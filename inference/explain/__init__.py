"""Explanations of a model's output: class activation maps and lesion localization."""
