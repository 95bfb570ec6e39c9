-- Per-collection state of the dataset, from every shard manifest (table `manifest`).
-- reveal: whether the collection looks unrevealed, read from image digests alone (the
-- manifests hold no traits): one image shown by at least $placeholder_share of its ok
-- tokens ('unrevealed: re-ingest'), or by a run of at least $placeholder_run consecutive
-- ok tokens while no other image repeats that often ('partly: N tokens'). The tables
-- build decides with traits too (sql/tables/unrevealed.sql): an editions collection
-- that repeats one image with a distinct trait set per copy is flagged here only.
WITH
    counts AS (
        SELECT
            collection,
            contract,
            count(*)                                        AS tokens,
            count(*) FILTER (status = 'ok')                 AS ok,
            count(*) FILTER (status <> 'ok')                AS failed,
            coalesce(string_agg(DISTINCT error_kind, ', ' ORDER BY error_kind), '-')
                                                            AS failure_kinds,
            count(DISTINCT sha256)                          AS distinct_images,
            coalesce(sum(bytes), 0)                         AS image_bytes
        FROM manifest
        GROUP BY collection, contract
    ),
    -- Each stored token once, as its newest row has it (a run after the reveal stores
    -- the revealed image), in id order.
    newest AS (
        SELECT contract, token_id, sha256 AS digest FROM manifest
        WHERE status = 'ok' AND sha256 IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY contract, token_id ORDER BY fetched_at DESC, sha256) = 1
    ),
    stored AS (
        SELECT contract, digest,
               row_number() OVER (PARTITION BY contract ORDER BY length(token_id), token_id) AS pos
        FROM newest
    ),
    images AS (
        SELECT contract, digest, count(*) AS holders FROM stored GROUP BY contract, digest
    ),
    top AS (
        SELECT *, count(*) FILTER (holders >= $placeholder_run) OVER (PARTITION BY contract)
                      AS repeated,
                  sum(holders) OVER (PARTITION BY contract) AS ok
        FROM images
        QUALIFY row_number() OVER (PARTITION BY contract ORDER BY holders DESC, digest) = 1
    ),
    -- Consecutive holders share pos - (their rank among holders): one island per run.
    runs AS (
        SELECT contract, max(n) AS run
        FROM (
            SELECT contract, count(*) AS n
            FROM (SELECT s.contract,
                         s.pos - row_number() OVER (PARTITION BY s.contract ORDER BY s.pos)
                             AS island
                  FROM stored AS s JOIN top USING (contract, digest))
            GROUP BY contract, island
        )
        GROUP BY contract
    ),
    reveal AS (
        SELECT contract,
               CASE WHEN holders < 2 THEN ''
                    WHEN holders >= $placeholder_share * ok THEN 'unrevealed: re-ingest'
                    WHEN run >= $placeholder_run AND repeated = 1
                        THEN format('partly: {} tokens', holders)
                    ELSE '' END AS reveal
        FROM top JOIN runs USING (contract)
    )
SELECT c.*, coalesce(r.reveal, '') AS reveal
FROM counts AS c LEFT JOIN reveal AS r USING (contract)
ORDER BY c.collection;
