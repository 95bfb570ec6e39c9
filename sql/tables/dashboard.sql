-- metadata_dashboard.json of each collection: the tokens described (unrevealed
-- placeholders apart: sql/tables/unrevealed.sql), each trait's values with count and
-- frequency, each token's rarity score and rank, its split.
-- Needs tokens, trait_counts, rarity_scores and collection_splits.
-- A JSON object from a list of {k, v} in the list's order (json_group_object is a
-- macro and cannot take ORDER BY).
CREATE OR REPLACE MACRO json_object_of(entries) AS to_json(map_from_entries(entries));

CREATE OR REPLACE VIEW dashboards AS
WITH
    sizes AS (
        SELECT collection, contract, count(*) FILTER (NOT unrevealed) AS tokens,
               count(*) FILTER (unrevealed) AS unrevealed
        FROM tokens WHERE metadata_key IS NOT NULL
        GROUP BY collection, contract
    ),
    values_by_type AS (
        SELECT contract, trait_type,
               json_object_of(list(
                   {'k': value, 'v': {'count': count, 'frequency': frequency}}
                   ORDER BY count DESC, value)) AS "values",
               sum(count) AS listed
        FROM trait_counts
        GROUP BY contract, trait_type
    ),
    types AS (
        SELECT contract,
               json_object_of(list({'k': trait_type, 'v': "values"} ORDER BY listed DESC, trait_type))
                   AS traits
        FROM values_by_type
        GROUP BY contract
    ),
    rarities AS (
        SELECT contract,
               json_object_of(list(
                   {'k': token_id, 'v': {'score': round(rarity_score, 6), 'rank': rarity_rank}}
                   ORDER BY length(token_id), token_id)) AS rarity
        FROM rarity_scores
        GROUP BY contract
    )
SELECT s.contract,
       json_object(
           'collection', s.collection,
           'contract', s.contract,
           'split', cs.split,
           'tokens', s.tokens,
           'unrevealed', s.unrevealed,
           'traits', coalesce(t.traits, '{}'::JSON),
           'rarity', coalesce(r.rarity, '{}'::JSON)
       ) AS dashboard
FROM sizes AS s
LEFT JOIN types AS t USING (contract)
LEFT JOIN rarities AS r USING (contract)
LEFT JOIN collection_splits AS cs USING (collection)
ORDER BY s.contract;
