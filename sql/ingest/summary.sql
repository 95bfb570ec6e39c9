-- Per-collection state of the dataset, from every shard manifest (table `manifest`).
SELECT
    collection,
    contract,
    count(*)                                        AS tokens,
    count(*) FILTER (status = 'ok')                 AS ok,
    count(*) FILTER (status <> 'ok')                AS failed,
    coalesce(string_agg(DISTINCT error_kind, ', ' ORDER BY error_kind), '-') AS failure_kinds,
    count(DISTINCT sha256)                          AS distinct_images,
    coalesce(sum(bytes), 0)                         AS image_bytes
FROM manifest
GROUP BY collection, contract
ORDER BY collection;
