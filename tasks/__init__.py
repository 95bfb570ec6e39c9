"""Units of work of the NFT1000 pipeline: pure, typed, and usable without Prefect."""
