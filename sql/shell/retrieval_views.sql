-- Retrieval results of every nft1000/evaluate run (variable tables: the tables root):
-- one row per model, data, pool, collection and K, columns as sql/evaluate/retrieval_results.sql.
CREATE OR REPLACE VIEW retrieval_results AS
    SELECT * FROM read_parquet(getvariable('tables') || '/retrieval_results/*.parquet');
