"""Registries: references, credentials, the distribution API client, push and pull."""
