-- Text-to-image top-K accuracy (tasks/evaluate/retrieval.py, docs/method.md section 5), kept in a
-- DuckDB database file. One row per model, evaluated data, candidate pool, collection
-- and K; tasks.evaluate.retrieval.write_results upserts on that key, so a rerun replaces its rows.
CREATE TABLE IF NOT EXISTS retrieval_results (
    model          VARCHAR NOT NULL,  -- the embedding model (name and checkpoint)
    data           VARCHAR NOT NULL,  -- the evaluated pairs (dataset and split)
    pool           VARCHAR NOT NULL,  -- 'within': the query's own collection; 'pooled': all
    collection     VARCHAR NOT NULL,  -- the queries' collection, or 'all' for every query
    k              INTEGER NOT NULL,
    accuracy       DOUBLE  NOT NULL,  -- hits / queries (on 'all' rows: the micro average)
    macro_accuracy DOUBLE,            -- 'all' rows only: the mean of the collections' accuracy
    hits           BIGINT  NOT NULL,  -- queries whose correct image ranked <= k
    queries        BIGINT  NOT NULL,
    evaluated_at   TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model, data, pool, collection, k),
    CHECK (pool IN ('within', 'pooled')),
    CHECK (k >= 1),
    CHECK (queries >= 1 AND hits BETWEEN 0 AND queries),
    CHECK ((collection = 'all') = (macro_accuracy IS NOT NULL))
);
