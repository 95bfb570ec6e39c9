"""How every service of the pipeline starts and stops, locally and in production."""
