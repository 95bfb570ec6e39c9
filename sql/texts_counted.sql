-- Needs `clip_words(word, tokens)`: CLIP tokens of each word (tasks/clip_tokens.py).
-- string_tokens is keyed by shape(text): look strings up through shape().
CREATE OR REPLACE TABLE string_tokens AS
SELECT s.text, sum(w.tokens)::INTEGER AS tokens
FROM strings_to_count AS s, unnest(string_split(s.text, ' ')) AS u(word)
JOIN clip_words AS w ON w.word = u.word
GROUP BY s.text;

-- Each distinct trait's tokens, alone ("plain") and followed by a comma, as in prompts.
CREATE OR REPLACE TABLE trait_tokens AS
SELECT d.trait_type, d.value, p.tokens AS plain, c.tokens AS comma
FROM distinct_traits AS d
JOIN string_tokens AS p ON p.text = shape(trait_text(d.trait_type, d.value))
JOIN string_tokens AS c ON c.text = shape(trait_text(d.trait_type, d.value) || ',');

-- Per token: how many traits, and the tokens of their texts, all and visual only.
CREATE OR REPLACE TABLE trait_sums AS
SELECT t.contract, t.token_id,
       count(*) AS n_all,
       count(*) FILTER (t.visual) AS n_visual,
       sum(k.plain) AS plain_all,
       coalesce(sum(k.plain) FILTER (t.visual), 0) AS plain_visual,
       sum(k.comma) AS comma_all,
       coalesce(sum(k.comma) FILTER (t.visual), 0) AS comma_visual
FROM token_traits AS t
JOIN trait_tokens AS k USING (trait_type, value)
GROUP BY t.contract, t.token_id;

-- Head token counts of the trait-based texts of each collection.
CREATE OR REPLACE TABLE head_tokens AS
SELECT c.collection, h.tokens AS caption, p.tokens AS prompt
FROM (SELECT DISTINCT collection FROM described) AS c
JOIN string_tokens AS h ON h.text = shape(caption_head(c.collection, true))
JOIN string_tokens AS p ON p.text = shape(prompt_head(c.collection, true));

-- How many traits fit before CLIP's cut, only for tokens whose traits could be cut.
-- Trait i fits when the text through its own words fits; in prompts the traits
-- before it carry their commas. "visual" counts only visual traits (our methods).
CREATE OR REPLACE TABLE cut_traits AS
WITH
    candidates AS (
        SELECT s.contract, s.token_id, any_value(h.caption) AS caption_head,
               any_value(h.prompt) AS prompt_head
        FROM trait_sums AS s
        JOIN collection_sizes AS z USING (contract)
        JOIN head_tokens AS h USING (collection)
        WHERE 2 + greatest(h.caption, h.prompt) + s.comma_all > getvariable('context')
        GROUP BY s.contract, s.token_id
    ),
    ordered AS (
        SELECT t.contract, t.token_id, t.visual, c.caption_head, c.prompt_head,
               sum(k.plain) OVER w AS plain_all,
               sum(k.plain) FILTER (t.visual) OVER w AS plain_visual,
               sum(k.comma) OVER w - k.comma + k.plain AS comma_all,
               sum(k.comma) FILTER (t.visual) OVER w - k.comma + k.plain AS comma_visual
        FROM token_traits AS t
        JOIN candidates AS c USING (contract, token_id)
        JOIN trait_tokens AS k USING (trait_type, value)
        WINDOW w AS (PARTITION BY t.contract, t.token_id ORDER BY t.pos)
    )
SELECT contract, token_id,
       count(*) FILTER (2 + caption_head + plain_all <= getvariable('context'))
           AS caption_all,
       count(*) FILTER (visual AND 2 + caption_head + plain_visual <= getvariable('context'))
           AS caption_visual,
       count(*) FILTER (2 + prompt_head + comma_all <= getvariable('context')) AS prompt_all,
       count(*) FILTER (visual AND 2 + prompt_head + comma_visual <= getvariable('context'))
           AS prompt_visual
FROM ordered
GROUP BY contract, token_id;

-- Each text as head + body, with what its token count is summed from:
-- trait_set (which traits' sums: 'all', 'visual' or none), extra strings (name,
-- description) and, for prompts, the last trait (last_type, last_value), which
-- carries no comma.
CREATE OR REPLACE VIEW text_parts AS
WITH b AS (
    SELECT *,
        traits[-1] AS last_all,
        visual_traits[-1] AS last_visual
    FROM text_basis
)
SELECT 'caption' AS kind, collection, contract, token_id, 'template' AS method,
       false AS preferred, caption_head(collection, len(traits) > 0) AS head,
       array_to_string(trait_texts(traits), ' ') AS body, 'all' AS trait_set,
       NULL::VARCHAR AS extra1, NULL::VARCHAR AS extra2,
       NULL::VARCHAR AS last_type, NULL::VARCHAR AS last_value
FROM b
UNION ALL
SELECT 'caption', collection, contract, token_id,
       CASE basis WHEN 'visual' THEN 'visual_template' WHEN 'described' THEN 'name_description'
                  ELSE 'collection' END,
       true,
       CASE basis WHEN 'described' THEN 'A picture of ' || collection || ','
                  ELSE caption_head(collection, basis = 'visual') END,
       CASE basis WHEN 'visual' THEN array_to_string(trait_texts(visual_traits), ' ')
                  WHEN 'described' THEN concat_ws(' ', name || '.', description)
                  ELSE '' END,
       CASE WHEN basis = 'visual' THEN 'visual' END,
       CASE WHEN basis = 'described' THEN name || '.' END,
       CASE WHEN basis = 'described' THEN description END,
       NULL, NULL
FROM b
UNION ALL
SELECT 'prompt', collection, contract, token_id, 'tags', false,
       prompt_head(collection, len(traits) > 0),
       array_to_string(trait_texts(traits), ', '), 'all', NULL, NULL,
       last_all.trait_type, last_all.value
FROM b
UNION ALL
SELECT 'prompt', collection, contract, token_id,
       CASE WHEN basis = 'visual' THEN 'visual_tags'
            WHEN basis = 'described' AND name IS NOT NULL THEN 'name'
            ELSE 'collection' END,
       true,
       prompt_head(collection, basis = 'visual' OR (basis = 'described' AND name IS NOT NULL)),
       CASE WHEN basis = 'visual' THEN array_to_string(trait_texts(visual_traits), ', ')
            WHEN basis = 'described' AND name IS NOT NULL THEN name
            ELSE '' END,
       CASE WHEN basis = 'visual' THEN 'visual' END,
       CASE WHEN basis = 'described' THEN name END,
       NULL,
       CASE WHEN basis = 'visual' THEN last_visual.trait_type END,
       CASE WHEN basis = 'visual' THEN last_visual.value END
FROM b;

-- clip_tokens: the sequence CLIP would read, start and end tokens included, before it
-- cuts at `context` tokens; traits_kept: traits whose whole text is inside the cut.
CREATE OR REPLACE VIEW texts AS
WITH counted AS (
    SELECT p.kind, p.collection, p.contract, p.token_id, p.method, p.preferred,
           CASE WHEN p.body = '' THEN p.head ELSE p.head || ' ' || p.body END AS text,
           (2 + h.tokens + coalesce(e1.tokens, 0) + coalesce(e2.tokens, 0)
               -- A token without traits has no trait_sums row: its traits add nothing.
               + coalesce(CASE
                   WHEN p.trait_set = 'all' AND p.kind = 'caption' THEN s.plain_all
                   WHEN p.trait_set = 'visual' AND p.kind = 'caption' THEN s.plain_visual
                   WHEN p.trait_set = 'all' THEN s.comma_all - lt.comma + lt.plain
                   WHEN p.trait_set = 'visual' THEN s.comma_visual - lt.comma + lt.plain
                 END, 0))::INTEGER AS clip_tokens,
           CASE p.trait_set WHEN 'all' THEN coalesce(s.n_all, 0)
                            WHEN 'visual' THEN s.n_visual ELSE 0 END AS traits_total,
           CASE
               WHEN p.trait_set = 'all' AND p.kind = 'caption' THEN k.caption_all
               WHEN p.trait_set = 'visual' AND p.kind = 'caption' THEN k.caption_visual
               WHEN p.trait_set = 'all' THEN k.prompt_all
               WHEN p.trait_set = 'visual' THEN k.prompt_visual
           END AS kept_when_cut
    FROM text_parts AS p
    JOIN string_tokens AS h ON h.text = shape(p.head)
    LEFT JOIN trait_sums AS s ON s.contract = p.contract AND s.token_id = p.token_id
    LEFT JOIN cut_traits AS k ON k.contract = p.contract AND k.token_id = p.token_id
    LEFT JOIN string_tokens AS e1 ON e1.text = shape(p.extra1)
    LEFT JOIN string_tokens AS e2 ON e2.text = shape(p.extra2)
    LEFT JOIN trait_tokens AS lt ON lt.trait_type = p.last_type AND lt.value = p.last_value
)
SELECT kind, collection, contract, token_id, method, preferred, text, clip_tokens,
       clip_tokens > getvariable('context') AS truncated, traits_total,
       CASE WHEN clip_tokens <= getvariable('context') THEN traits_total
            ELSE coalesce(kept_when_cut, 0) END AS traits_kept
FROM counted;
