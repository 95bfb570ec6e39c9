"""Services tier: the real local services (SeaweedFS S3, anvil, the demo gateway)."""
