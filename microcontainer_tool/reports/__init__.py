"""Reports about built images: SBOMs, differences between two images."""
