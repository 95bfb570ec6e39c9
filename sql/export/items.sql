-- What an export writes: tokens whose image was stored, with their preferred caption
-- and prompt and their split, under the collection name the tables build chose. Variables: tables (the tables root), splits (list),
-- mini_only, seed, shuffled (WebDataset order: by sha256 of seed/contract/token_id, the
-- same on every machine; else by collection and numeric token id, for the folder layout),
-- holdout (per collection, this many of the train split's exported tokens, drawn by
-- sha256 of seed/holdout/contract/token_id, become split 'holdout': a token-level
-- held-out set where every collection trains, as in the demo; 0: none).
-- caption_traits: the [trait_type, value] pairs a visual_template caption names, in order.
-- include_unrevealed: export unrevealed placeholders too (splits.unrevealed,
-- sql/tables/unrevealed.sql); by default they are left out, their images being one
-- placeholder and their captions its words.
WITH exported AS (
    SELECT s.collection, t.contract, t.token_id, s.split, s.in_mini, t.metadata_key,
           t.image_key, t.image_mime, c.caption, p.prompt, c.method AS caption_method,
           CASE WHEN c.method = 'visual_template'
                THEN list_transform(list_filter(t.traits, x -> x.visual),
                                    x -> [x.trait_type, x.value])
                ELSE [] END AS caption_traits
    FROM read_parquet(getvariable('tables') || '/tokens/*/*.parquet', union_by_name = true,
                      filename = true, file_row_number = true) AS t
    JOIN read_parquet(getvariable('tables') || '/splits.parquet') AS s USING (contract, token_id)
    JOIN read_parquet(getvariable('tables') || '/captions.parquet') AS c
        USING (contract, token_id)
    JOIN read_parquet(getvariable('tables') || '/prompts.parquet') AS p
        USING (contract, token_id)
    WHERE t.status = 'ok' AND t.image_key IS NOT NULL AND t.metadata_key IS NOT NULL
      AND c.preferred AND p.preferred
      AND (s.in_mini OR NOT getvariable('mini_only'))
      AND (NOT s.unrevealed OR getvariable('include_unrevealed'))
    -- A token ingested twice (two runs, overlapping blocks) is exported once: the row
    -- the tables build kept (sql/tables/token_rows.sql orders rows the same way).
    QUALIFY row_number() OVER (
        PARTITION BY t.contract, t.token_id
        ORDER BY t.status = 'ok' DESC, t.metadata_key IS NOT NULL DESC,
                 t.fetched_at DESC NULLS LAST, t.filename, t.file_row_number) = 1
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
