"""Reading and writing CT series as DICOM: scanning folders, headers, pixels, slice stacks."""
