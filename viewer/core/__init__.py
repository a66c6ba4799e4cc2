"""The volume model and the small types everything else uses: geometry, windows, events, progress, errors."""
