-- Upsert evaluated rows into retrieval_results (sql/evaluate/retrieval_results.sql), one list
-- per column: a rerun of the same model, data, pool, collection and K replaces its row.
INSERT OR REPLACE INTO retrieval_results
    (model, data, pool, collection, k, accuracy, macro_accuracy, hits, queries)
SELECT unnest($model::VARCHAR[]), unnest($data::VARCHAR[]), unnest($pool::VARCHAR[]),
       unnest($collection::VARCHAR[]), unnest($k::INTEGER[]), unnest($accuracy::DOUBLE[]),
       unnest($macro::DOUBLE[]), unnest($hits::BIGINT[]), unnest($queries::BIGINT[]);
