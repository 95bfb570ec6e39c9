-- The Comprehensive Variance Index (METHOD.md section 6, our definition), per collection
-- and per (collection, split), from the embeddings in one scan. Variable embeddings:
-- parquet files (a glob or list) with collection, contract, split, image and text (the
-- CLIP vectors of each token, float16 in the files). Vectors are L2-normalised here, so
-- float16 rounding does not leak into the norms.
--
-- For unit vectors v_i (images) and t_i (texts) of N pairs, with S_v = sum v_i,
-- S_t = sum t_i and d = sum v_i . t_i, everything follows from these sums:
--   image dispersion D_img = 1 - |S_v|^2 / N^2   (mean squared distance to the centroid)
--   text dispersion  D_txt = 1 - |S_t|^2 / N^2
--   matching margin  M = d / N - (S_v . S_t - d) / (N (N - 1))
--                    (mean cos of true pairs minus mean cos of the other pairs)
--   CVI = sqrt(D_img * D_txt) * M
-- Per-dimension sums come from unnesting each vector beside its dimension number; no
-- pairwise matrix is formed (about 5 s per 100,000 pairs of 512 dimensions on 2 cores).
-- A collection of one pair has no other pairs: M is NULL.

CREATE OR REPLACE TABLE cvi AS
WITH pairs AS (
    -- Each pair's norms and own dot product once per row, so that no list function
    -- runs once per dimension inside a lambda (that made the scan 100x slower).
    SELECT collection, contract, split, image::FLOAT[] AS v, text::FLOAT[] AS t,
           1 / sqrt(list_dot_product(image::FLOAT[], image::FLOAT[])) AS inv_v,
           1 / sqrt(list_dot_product(text::FLOAT[], text::FLOAT[])) AS inv_t
    FROM read_parquet(getvariable('embeddings'))
),
per_dimension AS (
    SELECT collection, contract, split,
           list_dot_product(v, t) * inv_v * inv_t AS own,
           unnest(range(len(v))) AS dim, unnest(v) * inv_v AS x_v, unnest(t) * inv_t AS x_t
    FROM pairs
),
sums AS (  -- per group and dimension: one pass, both levels through GROUPING SETS
    SELECT collection, contract, split, grouping(split) = 1 AS whole, dim,
           sum(x_v) AS s_v, sum(x_t) AS s_t,
           sum(CASE WHEN dim = 0 THEN own END) AS own,  -- each pair counted once
           count(*) AS n
    FROM per_dimension
    GROUP BY GROUPING SETS ((collection, contract, dim), (collection, contract, split, dim))
),
groups AS (
    SELECT collection, contract, split, whole,
           max(n)::BIGINT AS n,
           sum(s_v * s_v) AS vv, sum(s_t * s_t) AS tt, sum(s_v * s_t) AS vt,
           sum(own) AS d
    FROM sums
    GROUP BY collection, contract, split, whole
),
parts AS (
    SELECT *,
           1 - vv / (n * n) AS image_dispersion,
           1 - tt / (n * n) AS text_dispersion,
           CASE WHEN n > 1 THEN d / n - (vt - d) / (n * (n - 1)) END AS matching_margin
    FROM groups
)
SELECT CASE WHEN whole THEN 'collection' ELSE 'split' END AS level,
       collection, contract, CASE WHEN whole THEN NULL ELSE split END AS split,
       n AS pairs, image_dispersion, text_dispersion, matching_margin,
       sqrt(greatest(image_dispersion, 0) * greatest(text_dispersion, 0))
           * matching_margin AS cvi
FROM parts
ORDER BY level, collection, contract, split;
