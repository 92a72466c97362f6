"""Spec plus sources to the final file tree: path patterns, the closure, overlays, nss files."""
