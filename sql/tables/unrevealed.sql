-- Unrevealed tokens: a collection minted before its reveal serves one placeholder (one
-- image, "will be revealed" metadata) for every token, and a reveal in waves leaves a
-- run of them. Their traits are the placeholder's, not the token's: they are flagged
-- (tokens.unrevealed, splits.unrevealed), kept out of trait counts, rarity, the mini
-- subset and exports, and their collection gets a problem saying to re-ingest after the
-- reveal. Needs token_rows and dropped (sql/tables/token_rows.sql), contract_names, and
-- the variables placeholder_share and placeholder_run (tasks/ingest/summary.py says why
-- those values; the ingest summary applies the same image rule to manifests).
--
-- A token is a placeholder when
--   1. its name, or a trait, says so with a reveal phrase (below), whatever its image
--      (placeholders rendered per token, such as an SVG with the id, differ in bytes); or
--   2. its image is the collection's most shared one, that image is wide (shown by at
--      least placeholder_share of the collection's ok tokens, or by a run of at least
--      placeholder_run consecutive ok tokens while no other image repeats that often),
--      and either its holders have nothing to tell them apart (one trait set, empty or
--      not) or the token's name, description or traits hold a placeholder word.
-- Identical images alone are not enough: editions and 1-of-1s with copies repeat an
-- image legitimately, but give each copy its own traits (an edition number) or repeat
-- images a few at a time; a wide image with distinct trait sets and no placeholder word
-- is left alone. A reveal phrase in the description alone never flags a token: one
-- description is often the whole collection's ("secrets to be revealed").

-- Whole words or phrases, case-blind. Token texts are capped before they get here
-- (tasks/tables/tokens.py: names 256, descriptions 2,000, at most 100 traits of 256),
-- and RE2 matches in time linear in the text.
CREATE OR REPLACE MACRO reveal_phrase(text) AS coalesce(regexp_matches(text,
    '(?i)\b(un-?revealed|not\s+(yet\s+)?revealed|(will|to)\s+be\s+revealed|reveal(ing|ed)?\s+soon|pre-?reveal)\b'),
    false);
CREATE OR REPLACE MACRO placeholder_word(text) AS reveal_phrase(text)
    OR coalesce(regexp_matches(text, '(?i)\b(mystery|hidden|placeholder|coming\s+soon)\b'), false);
-- A token's traits as one text; " | " keeps a phrase from spanning two traits.
CREATE OR REPLACE MACRO traits_text(traits) AS
    array_to_string(list_transform(traits, t -> t.trait_type || ': ' || t.value), ' | ');

-- The ok tokens the tables use, in id order (pos), with what the rule reads of each.
-- trait_set: a hash of the token's traits text, only to count distinct trait sets.
-- Reading traits costs most here, so they are read once.
CREATE OR REPLACE TABLE reveal_tokens AS
SELECT contract, token_id, digest, pos, hash(trait_text) AS trait_set,
       reveal_phrase(name) OR reveal_phrase(trait_text) AS says_unrevealed
FROM (
    SELECT r.contract, r.token_id, r.image_sha256 AS digest, r.name,
           traits_text(r.traits) AS trait_text,
           row_number() OVER (PARTITION BY r.contract ORDER BY length(r.token_id), r.token_id)
               AS pos
    FROM token_rows AS r
    ANTI JOIN dropped AS d ON d.filename = r.filename AND d.file_row_number = r.file_row_number
    WHERE r.status = 'ok'
);

-- Per collection with ok tokens: how many (ok), its most shared image (ties: the
-- smaller digest), how many ok tokens show it, their distinct trait sets, its longest
-- run, and whether it is wide.
CREATE OR REPLACE TABLE shared_images AS
WITH
    images AS (
        SELECT contract, digest, count(*) AS holders, count(DISTINCT trait_set) AS trait_sets
        FROM reveal_tokens WHERE digest IS NOT NULL
        GROUP BY contract, digest
    ),
    top AS (
        SELECT *, count(*) FILTER (holders >= getvariable('placeholder_run'))
                      OVER (PARTITION BY contract) AS repeated
        FROM images
        QUALIFY row_number() OVER (PARTITION BY contract ORDER BY holders DESC, digest) = 1
    ),
    -- Consecutive holders share pos - (their rank among holders): one island per run.
    islands AS (
        SELECT t.contract, t.pos - row_number() OVER (PARTITION BY t.contract ORDER BY t.pos)
                   AS island
        FROM reveal_tokens AS t JOIN top USING (contract, digest)
    ),
    runs AS (
        SELECT contract, max(n) AS run
        FROM (SELECT contract, count(*) AS n FROM islands GROUP BY contract, island)
        GROUP BY contract
    ),
    sizes AS (SELECT contract, count(*) AS ok FROM reveal_tokens GROUP BY contract)
SELECT sizes.contract, sizes.ok, top.digest, top.holders, top.trait_sets, runs.run,
       coalesce(top.holders >= 2 AND (
           top.holders >= getvariable('placeholder_share') * sizes.ok
           OR (runs.run >= getvariable('placeholder_run') AND top.repeated = 1)
       ), false) AS wide
FROM sizes LEFT JOIN top USING (contract) LEFT JOIN runs USING (contract);

-- Holders of a wide image with distinct trait sets (editions, or placeholders that carry
-- a serial) are placeholders only if their words say so. Searched in those tokens
-- alone: most builds have none, and descriptions are the longest texts. The CASE keeps
-- DuckDB from searching every row before the join (it would push a filter on r alone).
CREATE OR REPLACE TABLE placeholder_words AS
SELECT r.contract, r.token_id
FROM token_rows AS r
JOIN (SELECT contract, digest FROM shared_images WHERE wide AND trait_sets > 1) AS s
    ON s.contract = r.contract AND s.digest = r.image_sha256
ANTI JOIN dropped AS d ON d.filename = r.filename AND d.file_row_number = r.file_row_number
WHERE CASE WHEN r.status = 'ok' AND s.digest IS NOT NULL
           THEN placeholder_word(r.name) OR placeholder_word(r.description)
                OR placeholder_word(traits_text(r.traits))
           ELSE false END;

CREATE OR REPLACE TABLE placeholder_tokens AS
SELECT t.contract, t.token_id, t.pos, t.digest = s.digest AND s.wide AS shown
FROM reveal_tokens AS t
JOIN shared_images AS s USING (contract)
LEFT JOIN placeholder_words AS w USING (contract, token_id)
WHERE t.says_unrevealed
   OR (s.wide AND t.digest = s.digest AND (s.trait_sets = 1 OR w.token_id IS NOT NULL));

-- One problem per collection with placeholders: 'unrevealed' when they are at least
-- placeholder_share of its ok tokens (re-ingest the collection), else
-- 'partly_unrevealed' (re-ingest those ids). token_id is NULL: the row is the collection's.
CREATE OR REPLACE TABLE reveal_problems AS
WITH
    counted AS (
        SELECT contract, count(*) AS placeholders, count(*) FILTER (shown) AS shown,
               arg_min(token_id, pos) AS first_id, arg_max(token_id, pos) AS last_id
        FROM placeholder_tokens
        GROUP BY contract
    ),
    stated AS (
        SELECT c.*, s.ok,
               c.placeholders >= getvariable('placeholder_share') * s.ok AS most,
               CASE WHEN c.shown * 2 >= c.placeholders
                    THEN format('one image, sha256 {}…, shown by {:,}', left(s.digest, 12), c.shown)
                    ELSE 'their metadata says so' END AS why
        FROM counted AS c JOIN shared_images AS s USING (contract)
    )
-- A plain rerun of the ingest keeps the tokens it stored: the detail says how to refetch.
SELECT n.collection, s.contract, NULL::VARCHAR AS token_id,
       CASE WHEN most THEN 'unrevealed' ELSE 'partly_unrevealed' END AS kind,
       CASE WHEN most
            THEN format('{:,} of {:,} tokens are unrevealed placeholders ({}): re-ingest the '
                        || 'collection after its reveal', placeholders, ok, why)
            ELSE format('{:,} of {:,} tokens, ids {} to {}, are unrevealed placeholders ({}): '
                        || 're-ingest them after their reveal',
                        placeholders, ok, first_id, last_id, why)
       END || ' (nft1000/ingest with refetch_unrevealed=true fetches them again); they are '
           || 'left out of rarity and exports' AS detail
FROM stated AS s JOIN contract_names AS n USING (contract);

-- The per-token working set is done with; the tables keep placeholder_tokens.
DROP TABLE reveal_tokens;
DROP TABLE placeholder_words;
