-- What an export writes: tokens whose image was stored, with their preferred caption
-- and prompt and their split. Variables: tables (the tables root), splits (list),
-- mini_only, seed, shuffled (WebDataset order: by sha256 of seed/contract/token_id, the
-- same on every machine; else by collection and numeric token id, for the folder layout).
-- caption_traits: the [trait_type, value] pairs a visual_template caption names, in order.
SELECT t.collection, t.contract, t.token_id, s.split, s.in_mini, t.metadata_key,
       t.image_key, t.image_mime, c.caption, p.prompt, c.method AS caption_method,
       CASE WHEN c.method = 'visual_template'
            THEN list_transform(list_filter(t.traits, x -> x.visual),
                                x -> [x.trait_type, x.value])
            ELSE [] END AS caption_traits
FROM read_parquet(getvariable('tables') || '/tokens/*/*.parquet') AS t
JOIN read_parquet(getvariable('tables') || '/splits.parquet') AS s USING (contract, token_id)
JOIN read_parquet(getvariable('tables') || '/captions.parquet') AS c USING (contract, token_id)
JOIN read_parquet(getvariable('tables') || '/prompts.parquet') AS p USING (contract, token_id)
WHERE t.status = 'ok' AND t.image_key IS NOT NULL AND t.metadata_key IS NOT NULL
  AND c.preferred AND p.preferred
  AND list_contains(getvariable('splits'), s.split)
  AND (s.in_mini OR NOT getvariable('mini_only'))
ORDER BY s.split,
         CASE WHEN getvariable('shuffled')
              THEN sha256(getvariable('seed') || '/' || t.contract || '/' || t.token_id) END,
         t.contract, length(t.token_id), t.token_id;
