-- What an export writes: tokens whose image was stored, with their preferred caption
-- and prompt and their split. Variables: tables (the tables root), splits (list),
-- mini_only, seed, shuffled (WebDataset order: by sha256 of seed/contract/token_id, the
-- same on every machine; else by collection and numeric token id, for the folder layout),
-- holdout (per collection, this many of the train split's exported tokens, drawn by
-- sha256 of seed/holdout/contract/token_id, become split 'holdout': a token-level
-- held-out set where every collection trains, as in the demo; 0: none).
-- caption_traits: the [trait_type, value] pairs a visual_template caption names, in order.
WITH exported AS (
    SELECT t.collection, t.contract, t.token_id, s.split, s.in_mini, t.metadata_key,
           t.image_key, t.image_mime, c.caption, p.prompt, c.method AS caption_method,
           CASE WHEN c.method = 'visual_template'
                THEN list_transform(list_filter(t.traits, x -> x.visual),
                                    x -> [x.trait_type, x.value])
                ELSE [] END AS caption_traits
    FROM read_parquet(getvariable('tables') || '/tokens/*/*.parquet') AS t
    JOIN read_parquet(getvariable('tables') || '/splits.parquet') AS s USING (contract, token_id)
    JOIN read_parquet(getvariable('tables') || '/captions.parquet') AS c
        USING (contract, token_id)
    JOIN read_parquet(getvariable('tables') || '/prompts.parquet') AS p
        USING (contract, token_id)
    WHERE t.status = 'ok' AND t.image_key IS NOT NULL AND t.metadata_key IS NOT NULL
      AND c.preferred AND p.preferred
      AND (s.in_mini OR NOT getvariable('mini_only'))
),
held AS (
    SELECT * REPLACE (
        CASE WHEN split = 'train' AND row_number() OVER (
                      PARTITION BY contract, split = 'train'
                      ORDER BY sha256(getvariable('seed') || '/holdout/' || contract || '/'
                                      || token_id), token_id
                  ) <= getvariable('holdout')
             THEN 'holdout' ELSE split END AS split)
    FROM exported
)
SELECT collection, contract, token_id, split, in_mini, metadata_key, image_key, image_mime,
       caption, prompt, caption_method, caption_traits
FROM held
WHERE list_contains(getvariable('splits'), split)
ORDER BY split,
         CASE WHEN getvariable('shuffled')
              THEN sha256(getvariable('seed') || '/' || contract || '/' || token_id) END,
         contract, length(token_id), token_id;
