"""The host's filesystem as the tool writes to it: atomic writes and the tool's cache directory."""
