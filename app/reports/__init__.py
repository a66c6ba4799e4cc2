"""Screening reports: a ranked batch table and one section per case (identity, probability, burden, key images,
the per-slice plot, the model card summary), as PDF (reportlab) or HTML. Qt-free."""
