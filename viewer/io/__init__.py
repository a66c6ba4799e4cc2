"""Files: opening volumes, label maps as NIfTI or DICOM SEG, recovery files, atomic writes."""
