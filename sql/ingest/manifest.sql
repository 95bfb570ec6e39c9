-- One row per token per ingest: where its metadata and image are stored, or why not.
-- Written as one parquet file per shard under s3://<bucket>/<prefix>manifests/<contract>/.
-- token_id is the uint256 id in decimal (ids can exceed 64 bits).
CREATE TABLE manifest (
    collection      VARCHAR NOT NULL,
    contract        VARCHAR NOT NULL,
    token_id        VARCHAR NOT NULL,
    token_uri       VARCHAR,
    metadata_key    VARCHAR,
    metadata_sha256 VARCHAR,
    metadata_cid    VARCHAR,
    image_uri       VARCHAR,
    image_key       VARCHAR,
    mime            VARCHAR,
    bytes           BIGINT,
    sha256          VARCHAR,
    cid             VARCHAR,
    width           INTEGER,
    height          INTEGER,
    status          VARCHAR NOT NULL,   -- 'ok' or 'failed'
    error_kind      VARCHAR,            -- see tasks/core/errors.py
    error           VARCHAR,
    retryable       BOOLEAN NOT NULL,   -- a later run tries this token again
    fetched_at      TIMESTAMP WITH TIME ZONE NOT NULL
);
