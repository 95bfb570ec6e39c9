-- The split of each collection, decided in Python (tasks/tables/splits.py: published NFT1000
-- split, else a hash of the name); sql/tables/splits.sql joins tokens to it.
CREATE OR REPLACE TABLE collection_splits AS
SELECT
    unnest($collections::VARCHAR[]) AS collection,
    unnest($splits::VARCHAR[])      AS split;
