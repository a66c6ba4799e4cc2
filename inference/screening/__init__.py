"""Screening a CT volume: lung mask, model, heat map, lesion mask, involvement."""
