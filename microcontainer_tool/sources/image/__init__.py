"""Existing images as inputs: locating (and pulling) them, reading them as a sysroot, parents."""
