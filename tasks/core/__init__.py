"""What every stage shares: settings, the bucket layout (paths), one S3 access layer
(s3, folders), DuckDB connections and SQL files, errors recorded per item, the retry
policy, and content sniffing. Imports no stage.
"""
