"""Qt-free use cases that join viewer and inference: batch screening, training export, training sets."""
