"""3D rendering with VTK."""
