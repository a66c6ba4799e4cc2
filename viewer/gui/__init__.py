"""Qt and VTK views of the viewer (the only part of viewer/ that imports Qt or VTK)."""
