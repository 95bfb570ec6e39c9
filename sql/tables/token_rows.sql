-- Every row of the tokens files of a build (variable tokens_files: a list of parquet
-- paths or a glob), with the file and row it came from, and which rows no table uses.
-- Tokens files are ours, but their rows come from manifests that two runs, a rename
-- or a bucket writer may have made disagree; a disagreement is a recorded problem
-- (sql/tables/tables_inputs.sql), never a failed build.
CREATE OR REPLACE VIEW token_rows AS
SELECT * FROM read_parquet(
    getvariable('tokens_files'), union_by_name = true, filename = true, file_row_number = true
);

-- Rows left out, and why (kind, detail):
--   bad_contract: the contract is not a lowercase 0x address (it names files);
--   bad_token_id: the id is not decimal text in 0..2**256-1 without leading zeros
--     ("01" would be a second row of token 1);
--   duplicate_token: another row of the same (contract, token_id) is used, from an
--     overlapping manifest block or another run. The row used is the first of: status
--     'ok', metadata read, newest fetched_at, then by file and row (deterministic).
CREATE OR REPLACE TABLE dropped AS
WITH
    checked AS (
        SELECT filename, file_row_number, collection, contract, token_id,
            CASE
                WHEN NOT regexp_full_match(contract, '0x[0-9a-f]{40}') THEN 'bad_contract'
                WHEN NOT regexp_full_match(token_id, '0|[1-9][0-9]{0,77}')
                     OR (length(token_id) = 78 AND token_id >
                         '115792089237316195423570985008687907853269984665640564039457584007913129639935')
                    THEN 'bad_token_id'
            END AS kind
        FROM token_rows
    ),
    twice AS (
        SELECT contract, token_id FROM checked WHERE kind IS NULL
        GROUP BY contract, token_id HAVING count(*) > 1
    ),
    ranked AS (
        SELECT r.filename, r.file_row_number, r.collection, r.contract, r.token_id,
               first_value(r.filename) OVER w AS used_file,
               first_value(r.file_row_number) OVER w AS used_row,
               row_number() OVER w AS choice
        FROM token_rows AS r SEMI JOIN twice USING (contract, token_id)
        WINDOW w AS (
            PARTITION BY r.contract, r.token_id
            ORDER BY r.status = 'ok' DESC, r.metadata_key IS NOT NULL DESC,
                     r.fetched_at DESC NULLS LAST, r.filename, r.file_row_number
        )
    )
SELECT filename, file_row_number, collection, contract, token_id, kind,
       CASE kind
           WHEN 'bad_contract' THEN 'contract is not a lowercase 0x address; row left out'
           ELSE 'token id is not decimal in 0..2**256-1 without leading zeros; row left out'
       END AS detail
FROM checked WHERE kind IS NOT NULL
UNION ALL
SELECT filename, file_row_number, collection, contract, token_id, 'duplicate_token',
       format('row {} of {} left out; the row used is row {} of {}',
              file_row_number, filename, used_row, used_file)
FROM ranked WHERE choice > 1;

-- Each contract's name as its rows give it, for tasks/tables/build.py to choose the
-- contract's one collection name from: a name other than the bare address (a run that
-- named the collection by address), then the newest run's, then the most rows', then
-- the first in byte order.
CREATE OR REPLACE TABLE name_candidates AS
SELECT contract, collection AS candidate
FROM (
    SELECT r.contract, r.collection, count(*) AS tokens, max(r.fetched_at) AS newest
    FROM token_rows AS r
    ANTI JOIN dropped AS d ON d.filename = r.filename AND d.file_row_number = r.file_row_number
    GROUP BY r.contract, r.collection
)
QUALIFY row_number() OVER (
    PARTITION BY contract
    ORDER BY lower(collection) <> contract DESC, newest DESC NULLS LAST, tokens DESC, collection
) = 1;
