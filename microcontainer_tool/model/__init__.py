"""The model of what goes in an image: the normalized file tree and its provenance record."""
