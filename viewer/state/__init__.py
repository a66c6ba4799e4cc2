"""The view model: view state, layers and slicing, Qt-free."""
