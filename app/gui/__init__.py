"""The Qt desktop application: main window, workers, dialogs, docks and the annotation controller."""
