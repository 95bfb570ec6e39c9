-- The Comprehensive Variance Index (docs/method.md section 6, our definition), per collection
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
-- Per-dimension sums come from unnesting each vector beside its dimension number, per
-- (collection, split); a collection's sums add its splits' up. No pairwise matrix is
-- formed (see bench/cvi.py for the time on 1,000,000 pairs of 512 dimensions).
-- A collection of one pair has no other pairs: M is NULL.

CREATE OR REPLACE TABLE cvi AS
WITH pairs AS (
    -- Norms and each pair's own dot product once per pair, in DOUBLE (FLOAT sums lose
    -- 1e-6 over 512 dimensions), and outside the SELECT that unnests, where they would
    -- run once per dimension.
    SELECT collection, contract, split, image::DOUBLE[] AS v, text::DOUBLE[] AS t,
           1 / sqrt(list_dot_product(image::DOUBLE[], image::DOUBLE[])) AS inv_v,
           1 / sqrt(list_dot_product(text::DOUBLE[], text::DOUBLE[])) AS inv_t,
           list_dot_product(image::DOUBLE[], text::DOUBLE[]) AS dot
    FROM read_parquet(getvariable('embeddings'))
),
per_dimension AS (
    SELECT collection, contract, split, dot * inv_v * inv_t AS own,
           unnest(range(len(v))) AS dim, unnest(v) * inv_v AS x_v, unnest(t) * inv_t AS x_t
    FROM pairs
),
sums AS (  -- per (collection, split) and dimension: the one pass over the pairs
    SELECT collection, contract, split, dim,
           sum(x_v) AS s_v, sum(x_t) AS s_t,
           sum(CASE WHEN dim = 0 THEN own END) AS own,  -- each pair counted once
           count(*) AS n
    FROM per_dimension
    GROUP BY collection, contract, split, dim
),
levels AS (  -- a collection's sums are its splits' sums added up
    SELECT collection, contract, split, false AS whole, dim, s_v, s_t, own, n FROM sums
    UNION ALL
    SELECT collection, contract, NULL, true, dim, sum(s_v), sum(s_t), sum(own), sum(n)
    FROM sums
    GROUP BY collection, contract, dim
),
groups AS (
    SELECT collection, contract, split, whole,
           max(n)::BIGINT AS n,
           sum(s_v * s_v) AS vv, sum(s_t * s_t) AS tt, sum(s_v * s_t) AS vt,
           sum(own) AS d
    FROM levels
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
