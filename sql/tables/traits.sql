-- Per collection: how many revealed tokens were described (tables_inputs.sql), each
-- (trait type, value)'s count and frequency, and a rarity score per token.
CREATE OR REPLACE TABLE collection_sizes AS
SELECT collection, contract, count(*) AS tokens
FROM revealed
GROUP BY collection, contract;

-- A token that lists one (trait type, value) twice counts once.
CREATE OR REPLACE TABLE trait_counts AS
WITH distinct_traits AS (
    SELECT DISTINCT contract, token_id, trait_type, value, display_type FROM token_traits
)
SELECT s.collection, d.contract, d.trait_type, d.value,
       any_value(d.display_type) AS display_type,
       count(*) AS count,
       count(*) / any_value(s.tokens) AS frequency
FROM distinct_traits AS d
JOIN collection_sizes AS s USING (contract)
GROUP BY s.collection, d.contract, d.trait_type, d.value;

-- Rarity as in rarity.tools: the sum over the collection's trait types of
-- 1 / frequency of the token's value, where lacking a trait type is a value too.
-- Numeric traits (numbers, boosts, dates) are left out: each value is near unique.
CREATE OR REPLACE MACRO numeric_display(display_type) AS
    coalesce(display_type IN ('number', 'boost_number', 'boost_percentage', 'date'), false);

CREATE OR REPLACE TABLE rarity_types AS
SELECT t.contract, t.trait_type, count(DISTINCT t.token_id) AS holders, any_value(s.tokens) AS tokens
FROM token_traits AS t
JOIN collection_sizes AS s USING (contract)
WHERE NOT numeric_display(t.display_type)
GROUP BY t.contract, t.trait_type;

-- Lacking type T is worth tokens / (tokens - holders T). It is summed once per
-- collection and taken back for the types a token has: no token x type grid.
-- Terms are summed as exact decimals: a float sum depends on the order DuckDB's
-- threads add in, so reruns would differ in the last bits (and in tied ranks).
CREATE OR REPLACE MACRO score_term(x) AS x::DECIMAL(38, 18);

CREATE OR REPLACE VIEW rarity AS
WITH
    counted AS (
        SELECT DISTINCT contract, token_id, trait_type, value
        FROM token_traits
        WHERE NOT numeric_display(display_type)
    ),
    present AS (
        SELECT contract, token_id, sum(score_term(1 / c.frequency)) AS score
        FROM counted JOIN trait_counts AS c USING (contract, trait_type, value)
        GROUP BY contract, token_id
    ),
    lacking AS (
        SELECT contract, trait_type, score_term(tokens / (tokens - holders)) AS score
        FROM rarity_types WHERE holders < tokens
    ),
    lacking_all AS (SELECT contract, sum(score) AS score FROM lacking GROUP BY contract),
    lacking_taken AS (
        SELECT h.contract, h.token_id, sum(l.score) AS score
        FROM (SELECT DISTINCT contract, token_id, trait_type FROM counted) AS h
        JOIN lacking AS l USING (contract, trait_type)
        GROUP BY h.contract, h.token_id
    ),
    scored AS (
        SELECT d.collection, d.contract, d.token_id,
               (coalesce(p.score, 0) + coalesce(la.score, 0) - coalesce(lt.score, 0))::DOUBLE
                   AS rarity_score
        FROM revealed AS d
        LEFT JOIN present AS p USING (contract, token_id)
        LEFT JOIN lacking_all AS la USING (contract)
        LEFT JOIN lacking_taken AS lt USING (contract, token_id)
    )
SELECT collection, contract, token_id, rarity_score,
       rank() OVER (PARTITION BY contract ORDER BY rarity_score DESC) AS rarity_rank
FROM scored;
