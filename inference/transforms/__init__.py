"""Pre-processing as code: HU windows, resizing, normalization, image reading, volume grids."""
