-- The texts of the tokens in whole_count_tokens, with the trait texts each one lists,
-- for counting whole in Python (see whole_counted in sql/tables/texts_counted.sql).
WITH
    b AS (SELECT * FROM text_basis SEMI JOIN whole_count_tokens USING (contract, token_id)),
    p AS (SELECT * FROM text_parts SEMI JOIN whole_count_tokens USING (contract, token_id))
SELECT p.kind, p.contract, p.token_id, p.method, p.head, p.body,
       CASE p.trait_set WHEN 'all' THEN trait_texts(b.traits)
                        WHEN 'visual' THEN trait_texts(b.visual_traits) END AS trait_list
FROM p JOIN b USING (contract, token_id);
