"""Running images: OCI bundles, the runtime config, runc, and the debug toolbox."""
