-- CVI and top-1 of each collection in the latest nft1000/cvi run (make demo's line).
WITH last AS (SELECT model, data FROM cvi ORDER BY computed_at DESC LIMIT 1)
SELECT collection, cvi, top1
FROM cvi JOIN last USING (model, data)
WHERE level = 'collection'
ORDER BY cvi DESC NULLS LAST, collection;
