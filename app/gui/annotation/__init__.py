"""Annotation in the GUI: the controller (editing, undo, save, autosave) and its panel."""
