-- CVI results of every nft1000/cvi run (variable tables: the tables root): one row per
-- model, data, collection (level 'collection') or collection and split (level 'split'),
-- columns as sql/evaluate/cvi_results.sql.
CREATE OR REPLACE VIEW cvi AS
    SELECT * FROM read_parquet(getvariable('tables') || '/cvi/*.parquet');
