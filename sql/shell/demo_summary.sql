-- make demo's closing table: per collection, what each stage made of it. Needs the
-- views of sql/shell/views.sql, retrieval_results and cvi (sql/shell/retrieval_views.sql,
-- sql/shell/cvi_views.sql). Accuracy and CVI are those of the latest runs, on their data;
-- CVI is the held-out split's where there is one, else the whole collection's.
WITH
    ingested AS (
        SELECT collection,
               count(*) AS tokens,
               count(*) FILTER (status = 'ok') AS ok,
               count(*) FILTER (status <> 'ok') AS failed
        FROM manifests
        GROUP BY collection
    ),
    captioned AS (
        SELECT collection, count(*) AS captions FROM captions WHERE preferred GROUP BY collection
    ),
    last_eval AS (
        SELECT model, data FROM retrieval_results ORDER BY evaluated_at DESC LIMIT 1
    ),
    accuracy AS (
        SELECT collection,
               any_value(queries) AS queries,
               max(accuracy) FILTER (k = 1) AS top1,
               max(accuracy) FILTER (k = 10) AS top10
        FROM retrieval_results JOIN last_eval USING (model, data)
        WHERE pool = 'within' AND collection <> 'all'
        GROUP BY collection
    ),
    last_cvi AS (SELECT model, data FROM cvi ORDER BY computed_at DESC LIMIT 1),
    cvis AS (
        SELECT collection,
               coalesce(max(cvi) FILTER (level = 'split' AND split = 'holdout'),
                        max(cvi) FILTER (level = 'collection')) AS cvi
        FROM cvi JOIN last_cvi USING (model, data)
        GROUP BY collection
    )
SELECT collection, tokens, ok, failed, coalesce(captions, 0) AS captions,
       queries, top1, top10, cvi
FROM ingested
LEFT JOIN captioned USING (collection)
LEFT JOIN accuracy USING (collection)
LEFT JOIN cvis USING (collection)
ORDER BY collection;
