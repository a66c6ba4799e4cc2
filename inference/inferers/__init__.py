"""Running a registered network on slices or volumes, with torch or ONNX Runtime."""
