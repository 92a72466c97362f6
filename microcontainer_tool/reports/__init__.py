"""Reports about a built image: SBOMs."""
