-- One row per token: what `nft1000/tables` reads from a manifest row and the token's
-- metadata JSON (tasks/tables/tokens.py). Written per manifest block to
-- tables/tokens/<contract>/<block>.parquet; every other table is built from these.
CREATE OR REPLACE TABLE tokens (
    collection   VARCHAR NOT NULL,   -- cleaned, at most 200 characters, never empty
    contract     VARCHAR NOT NULL,   -- lowercase 0x address
    token_id     VARCHAR NOT NULL,   -- decimal text: ids go up to 2**256 - 1
    fetched_at   TIMESTAMP WITH TIME ZONE NOT NULL,  -- the manifest row's
    name         VARCHAR,            -- metadata "name", cleaned (NULL when absent)
    description  VARCHAR,            -- metadata "description", cleaned and capped
    status       VARCHAR NOT NULL,   -- the manifest's: 'ok' or the failure's kind
    error_kind   VARCHAR,
    metadata_key VARCHAR,            -- the metadata JSON blob in S3 (NULL: never read)
    image_key    VARCHAR,            -- the image blob in S3 (NULL unless status 'ok')
    image_mime   VARCHAR,
    image_sha256 VARCHAR,
    width        INTEGER,
    height       INTEGER,
    -- Normalised traits in metadata order (tasks/tables/traits.py); visual: whether the
    -- trait likely shows in the image (tasks.tables.traits.is_visual).
    traits STRUCT(trait_type VARCHAR, value VARCHAR, display_type VARCHAR, visual BOOLEAN)[]
        NOT NULL,
    -- Why anything in the metadata was skipped or changed, never the token's own text.
    problems     VARCHAR[] NOT NULL
);
