"""Inputs: directory trees (sysroots), Debian package facts, RPM packages and repositories, images."""
