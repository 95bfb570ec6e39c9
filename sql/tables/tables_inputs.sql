-- The tokens files of a build (variable tokens_files: a list of parquet paths or a
-- glob), and the tokens whose metadata was read: the population of every table.
CREATE OR REPLACE VIEW tokens AS
SELECT * FROM read_parquet(getvariable('tokens_files'));

CREATE OR REPLACE VIEW described AS
SELECT
    collection, contract, token_id, name, description, traits,
    list_filter(traits, t -> t.visual) AS visual_traits
FROM tokens
WHERE metadata_key IS NOT NULL;

-- One row per trait of a token, with its place in the metadata (1-based). Two unnests
-- in one SELECT walk their lists side by side (WITH ORDINALITY is 15x slower here).
CREATE OR REPLACE VIEW token_traits AS
SELECT collection, contract, token_id, pos, t.trait_type, t.value, t.display_type, t.visual
FROM (
    SELECT collection, contract, token_id,
           unnest(traits) AS t, unnest(range(1, len(traits) + 1)) AS pos
    FROM described
);
