"""Exceptions the CT I/O raises; their text is shown to the user as is."""

from __future__ import annotations


class LoadError(Exception):
    """A file or series cannot be read; the message names the file and the problem."""


class LoadCancelled(Exception):
    """The user cancelled a load in progress."""
