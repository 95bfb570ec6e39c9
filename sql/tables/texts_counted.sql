-- Needs `clip_words(word, tokens)`: CLIP tokens of each word (tasks/tables/clip_tokens.py).
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

-- Tokens of each head, by its own text (no shape() per row when texts look it up).
CREATE OR REPLACE TABLE head_texts AS
SELECT h.head, s.tokens FROM heads AS h JOIN string_tokens AS s ON s.text = shape(h.head);

-- How many traits fit before CLIP's cut, for texts that are cut: filled per kind by
-- sql/tables/cut_traits.sql just before that kind's texts are written.
CREATE OR REPLACE TABLE cut_traits (
    kind VARCHAR, contract VARCHAR, token_id VARCHAR, all_kept BIGINT, visual_kept BIGINT
);

-- Texts whose count is taken whole in Python instead (tasks/tables/build.py): ftfy, inside
-- CLIP's tokenizer, repairs mojibake and decodes HTML entities looking at the whole
-- text, so word by word can be off. Such tokens hold a Latin-1 or cp1252 sign, two
-- Latin-1 characters in a row (mojibake is a lead byte and a continuation byte), "Â"
-- or "Ã" before a space (a lost no-break space), or "<" with "&" (ftfy then leaves
-- entities alone). Ordinary accented words ("Pokémon", "São") stay on the fast path;
-- 70,000 random texts of Latin-1 and cp1252 characters showed no miss.
CREATE OR REPLACE TABLE whole_counted (
    kind VARCHAR, contract VARCHAR, token_id VARCHAR, method VARCHAR,
    clip_tokens INTEGER, traits_kept BIGINT
);

-- Whether any word could need it: a word with mojibake, or one ending in "Â" or "Ã",
-- or words with "<" and with "&". Most builds have none, and skip the scan below.
CREATE OR REPLACE MACRO mojibake(text) AS regexp_matches(
    text,
    '[\x{A1}-\x{BF}\x{D7}\x{F7}€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]'
    || '|[\x{C0}-\x{FF}][\x{A0}-\x{FF}€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]|[\x{C2}\x{C3}]( |$)'
);

SET VARIABLE whole_count = (
    SELECT bool_or(mojibake(word)) OR (bool_or(contains(word, '<')) AND bool_or(contains(word, '&')))
    FROM clip_words
);

CREATE OR REPLACE TABLE whole_count_tokens AS
SELECT contract, token_id FROM (
    SELECT contract, token_id,
           concat_ws(' ', collection, name, description,
                     array_to_string(trait_texts(traits), ' ')) AS words
    FROM described
    WHERE getvariable('whole_count')
)
WHERE mojibake(words) OR (contains(words, '<') AND contains(words, '&'));

-- Each text as head + body, with what its token count is summed from:
-- trait_set (which traits' sums: 'all', 'visual' or none), extra strings (name,
-- description) and, for prompts, the last trait (last_type, last_value), which
-- carries no comma.
CREATE OR REPLACE MACRO part(
    method, preferred, head, body, trait_set, extra1, extra2, last_type, last_value
) AS {
    'method': method, 'preferred': preferred, 'head': head, 'body': body,
    'trait_set': trait_set, 'extra1': extra1::VARCHAR, 'extra2': extra2::VARCHAR,
    'last_type': last_type::VARCHAR, 'last_value': last_value::VARCHAR
};

-- Both texts of a kind come from one scan of the tokens (a list of two, unnested);
-- when every trait is visual, ours reuses the authors' body.
CREATE OR REPLACE VIEW text_parts AS
WITH b AS (
    SELECT *,
        array_to_string(trait_texts(traits), ' ') AS caption_all,
        CASE WHEN len(visual_traits) = len(traits) THEN caption_all
             ELSE array_to_string(trait_texts(visual_traits), ' ') END AS caption_visual,
        array_to_string(trait_texts(traits), ', ') AS prompt_all,
        CASE WHEN len(visual_traits) = len(traits) THEN prompt_all
             ELSE array_to_string(trait_texts(visual_traits), ', ') END AS prompt_visual
    FROM text_basis
),
parts AS (
    SELECT 'caption' AS kind, collection, contract, token_id, unnest([
        part('template', false, caption_head(collection, len(traits) > 0), caption_all,
             'all', NULL, NULL, NULL, NULL),
        CASE basis
            WHEN 'visual' THEN part('visual_template', true, caption_head(collection, true),
                                    caption_visual, 'visual', NULL, NULL, NULL, NULL)
            WHEN 'described' THEN part('name_description', true,
                                       'A picture of ' || collection || ',',
                                       concat_ws(' ', name || '.', description), NULL,
                                       name || '.', description, NULL, NULL)
            ELSE part('collection', true, caption_head(collection, false), '',
                      NULL, NULL, NULL, NULL, NULL)
        END
    ]) AS p
    FROM b
    UNION ALL
    SELECT 'prompt', collection, contract, token_id, unnest([
        part('tags', false, prompt_head(collection, len(traits) > 0), prompt_all, 'all',
             NULL, NULL, traits[-1].trait_type, traits[-1].value),
        CASE
            WHEN basis = 'visual' THEN part('visual_tags', true, prompt_head(collection, true),
                                            prompt_visual, 'visual', NULL, NULL,
                                            visual_traits[-1].trait_type,
                                            visual_traits[-1].value)
            WHEN basis = 'described' AND name IS NOT NULL
                THEN part('name', true, prompt_head(collection, true), name, NULL, name,
                          NULL, NULL, NULL)
            ELSE part('collection', true, prompt_head(collection, false), '',
                      NULL, NULL, NULL, NULL, NULL)
        END
    ])
    FROM b
)
SELECT kind, collection, contract, token_id, p.* FROM parts;

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
           CASE p.trait_set WHEN 'all' THEN k.all_kept WHEN 'visual' THEN k.visual_kept
           END AS kept_when_cut
    FROM text_parts AS p
    JOIN head_texts AS h ON h.head = p.head
    LEFT JOIN trait_sums AS s ON s.contract = p.contract AND s.token_id = p.token_id
    LEFT JOIN cut_traits AS k
        ON k.kind = p.kind AND k.contract = p.contract AND k.token_id = p.token_id
    LEFT JOIN string_tokens AS e1 ON e1.text = shape(p.extra1)
    LEFT JOIN string_tokens AS e2 ON e2.text = shape(p.extra2)
    LEFT JOIN trait_tokens AS lt ON lt.trait_type = p.last_type AND lt.value = p.last_value
),
checked AS (
    SELECT c.* REPLACE (coalesce(w.clip_tokens, c.clip_tokens) AS clip_tokens),
           coalesce(w.traits_kept, c.kept_when_cut) AS kept
    FROM counted AS c
    LEFT JOIN whole_counted AS w
        ON w.kind = c.kind AND w.contract = c.contract AND w.token_id = c.token_id
           AND w.method = c.method
)
SELECT kind, collection, contract, token_id, method, preferred, text, clip_tokens,
       clip_tokens > getvariable('context') AS truncated, traits_total,
       CASE WHEN clip_tokens <= getvariable('context') THEN traits_total
            ELSE coalesce(kept, 0) END AS traits_kept
FROM checked;
