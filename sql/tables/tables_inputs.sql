-- The population of every table: the rows of the tokens files that sql/tables/token_rows.sql
-- did not leave out (one per contract and token id), each named by its contract's one
-- collection (contract_names(contract, collection), chosen in tasks/tables/build.py).
-- listed_collection: the name the row's manifest gave; unrevealed: the token is a
-- placeholder awaiting its reveal (sql/tables/unrevealed.sql, run before this file).
CREATE OR REPLACE VIEW named_rows AS
SELECT n.collection, r.collection AS listed_collection,
       r.* EXCLUDE (collection, filename, file_row_number),
       p.token_id IS NOT NULL AS unrevealed
FROM token_rows AS r
JOIN contract_names AS n ON n.contract = r.contract
LEFT JOIN placeholder_tokens AS p ON p.contract = r.contract AND p.token_id = r.token_id
ANTI JOIN dropped AS d ON d.filename = r.filename AND d.file_row_number = r.file_row_number;

CREATE OR REPLACE VIEW tokens AS SELECT * EXCLUDE (listed_collection) FROM named_rows;

-- What a build found wrong, one row per token and problem: rows left out (kinds in
-- sql/tables/token_rows.sql), a row whose manifest gave its contract another name
-- (collection_name), what the token's metadata made tasks/tables/tokens.py skip or
-- change (metadata; collection_name for its collection name), and one row (token_id
-- NULL) per collection with unrevealed placeholders (unrevealed, partly_unrevealed).
-- Details never quote a token's metadata; ids, addresses and names are cut to their
-- longest valid length.
CREATE OR REPLACE VIEW problems AS
SELECT coalesce(n.collection, left(d.collection, 200)) AS collection,
       left(d.contract, 42) AS contract, left(d.token_id, 78) AS token_id, d.kind, d.detail
FROM dropped AS d LEFT JOIN contract_names AS n ON n.contract = d.contract
UNION ALL
SELECT collection, contract, token_id, 'collection_name',
       'its manifest names it ' || to_json(left(listed_collection, 200))
FROM named_rows WHERE listed_collection <> collection
UNION ALL
SELECT collection, contract, token_id,
       CASE WHEN starts_with(problem, 'collection: ') THEN 'collection_name' ELSE 'metadata' END,
       problem
FROM (SELECT collection, contract, token_id, unnest(problems) AS problem
      FROM named_rows WHERE len(problems) > 0)
UNION ALL
SELECT * FROM reveal_problems;

-- Tokens whose metadata was read, unrevealed placeholders too: captions and prompts are
-- made for them, so an export that asks for placeholders (include_unrevealed) has texts.
CREATE OR REPLACE VIEW described AS
SELECT
    collection, contract, token_id, name, description, traits,
    list_filter(traits, t -> t.visual) AS visual_traits
FROM tokens
WHERE metadata_key IS NOT NULL;

-- The described tokens that are not placeholders: what trait counts and rarity are of
-- (a placeholder's traits are not its token's, and thousands of them tie at rank 1).
CREATE OR REPLACE VIEW revealed AS
SELECT d.* FROM described AS d ANTI JOIN placeholder_tokens AS p USING (contract, token_id);

-- One row per trait of a token, with its place in the metadata (1-based). Two unnests
-- in one SELECT walk their lists side by side (WITH ORDINALITY is 15x slower here).
CREATE OR REPLACE VIEW token_traits AS
SELECT collection, contract, token_id, pos, t.trait_type, t.value, t.display_type, t.visual
FROM (
    SELECT collection, contract, token_id,
           unnest(traits) AS t, unnest(range(1, len(traits) + 1)) AS pos
    FROM described
);
