"""End-to-end tier: the whole local stack, deployments run through Prefect and Dask."""
