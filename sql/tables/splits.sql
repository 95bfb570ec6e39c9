-- Every token with its collection's split, whether it is in the seeded mini subset
-- (at most $per_collection tokens per collection, never an unrevealed placeholder), and
-- whether it is one (exports leave those out unless asked: sql/export/items.sql). Needs
-- `tokens(collection, contract, token_id, unrevealed)` and `collection_splits(collection,
-- split)`. token_id is the decimal id as text, so ids beyond 64 bits hash and compare
-- exactly. Ranking by sha256(seed, collection, token_id) is a random draw that the same
-- seed repeats on any machine and DuckDB version.
CREATE OR REPLACE TABLE splits AS
WITH
    one_split AS (
        SELECT
            collection,
            CASE
                WHEN count(DISTINCT split) > 1
                    THEN error('collection ' || collection || ' has more than one split')
                ELSE any_value(split)
            END AS split
        FROM collection_splits
        GROUP BY collection
    ),
    ranked AS (
        SELECT
            t.collection,
            t.contract,
            t.token_id,
            CASE
                WHEN s.split IS NULL
                    THEN error('collection ' || t.collection || ' is not in collection_splits')
                ELSE s.split
            END AS split,
            t.unrevealed,
            row_number() OVER (
                PARTITION BY t.contract
                ORDER BY t.unrevealed,
                         sha256(concat_ws('/', $seed, t.collection, t.token_id)), t.token_id
            ) AS draw
        FROM (SELECT DISTINCT collection, contract, token_id, unrevealed FROM tokens) AS t
        LEFT JOIN one_split AS s USING (collection)
    )
SELECT collection, contract, token_id, split,
       draw <= $per_collection AND NOT unrevealed AS in_mini, unrevealed
FROM ranked;
