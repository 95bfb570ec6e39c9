-- Captions and prompts (docs/method.md section 3), two methods each:
--   captions: 'template' (the authors': every trait, metadata order), and ours,
--     preferred: 'visual_template' (visual traits only), else 'name_description'
--     (the token's name and description), else 'collection';
--   prompts: 'tags' (every trait), and ours: 'visual_tags', else 'name', else 'collection'.
-- A text is a head ("A picture of Moonbirds, containing") and a body (the traits,
-- or the name and description). CLIP token counts are sums over the distinct
-- strings a text is made of, each counted once (no CLIP token spans a space).

CREATE OR REPLACE MACRO trait_text(trait_type, value) AS
    CASE WHEN trait_type = '' THEN value ELSE value || ' ' || trait_type END;

CREATE OR REPLACE MACRO trait_texts(traits) AS
    list_transform(traits, t -> trait_text(t.trait_type, t.value));

-- Which of our methods a described token gets.
CREATE OR REPLACE VIEW text_basis AS
SELECT *,
    CASE
        WHEN len(visual_traits) > 0 THEN 'visual'
        WHEN name IS NOT NULL OR description IS NOT NULL THEN 'described'
        ELSE 'collection'
    END AS basis
FROM described;

CREATE OR REPLACE MACRO caption_head(collection, has_traits) AS
    'A picture of ' || collection || CASE WHEN has_traits THEN ', containing' ELSE '' END;

CREATE OR REPLACE MACRO prompt_head(collection, has_traits) AS
    collection || CASE WHEN has_traits THEN ',' ELSE '' END;

-- Strings are counted by their shape: CLIP makes every digit a token of its own, so
-- "Bag #1234" and "Bag #5678" take as many tokens and "Bag #0000" stands for both;
-- without this, ids in names would make a million strings to count. Strings with "&"
-- keep their digits (HTML entities such as "&#49;" are decoded before counting).
CREATE OR REPLACE MACRO shape(text) AS
    CASE WHEN contains(text, '&') THEN text ELSE regexp_replace(text, '[0-9]', '0', 'g') END;

-- Every distinct trait, with whether its text needs counting with a comma too.
CREATE OR REPLACE TABLE distinct_traits AS
SELECT DISTINCT trait_type, value FROM token_traits;

-- Every head a text can start with.
CREATE OR REPLACE TABLE heads AS
WITH collections AS (SELECT DISTINCT collection FROM described)
SELECT DISTINCT head FROM (
    SELECT caption_head(collection, true) AS head FROM collections
    UNION ALL SELECT caption_head(collection, false) FROM collections
    UNION ALL SELECT 'A picture of ' || collection || ',' FROM collections
    UNION ALL SELECT prompt_head(collection, true) FROM collections
    UNION ALL SELECT prompt_head(collection, false) FROM collections
);

-- Every distinct string (shape) whose CLIP tokens a text's count is summed from.
CREATE OR REPLACE TABLE strings_to_count AS
SELECT DISTINCT shape(text) AS text FROM (
    SELECT head AS text FROM heads
    UNION ALL SELECT trait_text(trait_type, value) FROM distinct_traits
    UNION ALL SELECT trait_text(trait_type, value) || ',' FROM distinct_traits
    UNION ALL SELECT name FROM described WHERE name IS NOT NULL
    UNION ALL SELECT name || '.' FROM described WHERE name IS NOT NULL
    UNION ALL SELECT description FROM described WHERE description IS NOT NULL
);

-- Every distinct word (split at ASCII spaces; no CLIP token spans a space).
CREATE OR REPLACE VIEW words_to_count AS
SELECT DISTINCT unnest(string_split(text, ' ')) AS word FROM strings_to_count;
