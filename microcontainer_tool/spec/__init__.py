"""The image spec: ``microimage.yaml`` and smith's ``smith.yaml``, loaded and validated."""
