-- Top-1 and top-10 over all queries of the latest nft1000/evaluate run (make demo's line).
WITH last AS (SELECT model, data FROM retrieval_results ORDER BY evaluated_at DESC LIMIT 1)
SELECT model, data, pool, k, accuracy, queries
FROM retrieval_results JOIN last USING (model, data)
WHERE collection = 'all' AND k IN (1, 10)
ORDER BY pool DESC, k;
