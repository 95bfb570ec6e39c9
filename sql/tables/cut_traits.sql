-- How many traits fit before CLIP's cut, for the texts of one kind (variable cut_kind:
-- 'caption' or 'prompt') whose traits could be cut. Trait i fits when the text through
-- its own words fits; in prompts the traits before it carry their commas. "visual"
-- counts only visual traits (our methods).
INSERT INTO cut_traits
WITH
    per_kind AS (
        SELECT s.contract, s.token_id,
               CASE getvariable('cut_kind') WHEN 'caption' THEN h.caption ELSE h.prompt END
                   AS head,
               CASE getvariable('cut_kind') WHEN 'caption' THEN s.plain_all ELSE s.comma_all END
                   AS total
        FROM trait_sums AS s
        JOIN collection_sizes AS z USING (contract)
        JOIN head_tokens AS h USING (collection)
    ),
    candidates AS (
        SELECT contract, token_id, head FROM per_kind
        WHERE 2 + head + total > getvariable('context')
    ),
    ordered AS (
        SELECT t.contract, t.token_id, t.visual, c.head,
               CASE getvariable('cut_kind')
                   WHEN 'caption' THEN sum(k.plain) OVER w
                   ELSE sum(k.comma) OVER w - k.comma + k.plain
               END AS through_all,
               CASE getvariable('cut_kind')
                   WHEN 'caption' THEN sum(k.plain) FILTER (t.visual) OVER w
                   ELSE sum(k.comma) FILTER (t.visual) OVER w - k.comma + k.plain
               END AS through_visual
        FROM token_traits AS t
        JOIN candidates AS c USING (contract, token_id)
        JOIN trait_tokens AS k USING (trait_type, value)
        WINDOW w AS (PARTITION BY t.contract, t.token_id ORDER BY t.pos)
    )
SELECT getvariable('cut_kind'), contract, token_id,
       count(*) FILTER (2 + head + through_all <= getvariable('context')),
       count(*) FILTER (visual AND 2 + head + through_visual <= getvariable('context'))
FROM ordered
GROUP BY contract, token_id;
