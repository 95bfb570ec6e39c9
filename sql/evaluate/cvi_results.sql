-- One nft1000/cvi run's result table: the cvi table (sql/evaluate/cvi.sql) of a model's
-- embeddings of an export, each row beside the within-collection text-to-image top-1
-- of the same pairs (table cvi_top1, registered by the flow), so CVI can be checked
-- against the difficulty it is meant to rank. Variables: model, data.
CREATE OR REPLACE TABLE cvi_results AS
SELECT getvariable('model')::VARCHAR AS model,
       getvariable('data')::VARCHAR AS data,
       c.level, c.collection, c.contract, c.split, c.pairs,
       c.image_dispersion, c.text_dispersion, c.matching_margin, c.cvi,
       t.top1,
       current_timestamp AS computed_at
FROM cvi AS c
LEFT JOIN cvi_top1 AS t
    ON t.collection = c.collection AND t.contract = c.contract
   AND t.split IS NOT DISTINCT FROM c.split
ORDER BY c.level, c.cvi DESC NULLS LAST, c.collection, c.contract, c.split;
