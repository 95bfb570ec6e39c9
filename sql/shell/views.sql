-- Views over every table of a run, for `nft1000 sql` (variable tables: the tables root;
-- variable manifests: the manifests root). Rerun after a new table appears.
CREATE OR REPLACE VIEW tokens AS SELECT * FROM read_parquet(getvariable('tables') || '/tokens/*/*.parquet');
CREATE OR REPLACE VIEW traits AS SELECT * FROM read_parquet(getvariable('tables') || '/traits.parquet');
CREATE OR REPLACE VIEW rarity AS SELECT * FROM read_parquet(getvariable('tables') || '/rarity.parquet');
CREATE OR REPLACE VIEW captions AS SELECT * FROM read_parquet(getvariable('tables') || '/captions.parquet');
CREATE OR REPLACE VIEW prompts AS SELECT * FROM read_parquet(getvariable('tables') || '/prompts.parquet');
CREATE OR REPLACE VIEW splits AS SELECT * FROM read_parquet(getvariable('tables') || '/splits.parquet');
CREATE OR REPLACE VIEW problems AS SELECT * FROM read_parquet(getvariable('tables') || '/problems.parquet');
CREATE OR REPLACE VIEW collection_splits AS
    SELECT * FROM read_parquet(getvariable('tables') || '/collection_splits.parquet');
CREATE OR REPLACE VIEW manifests AS
    SELECT * FROM read_parquet(getvariable('manifests') || '/*/*.parquet');
