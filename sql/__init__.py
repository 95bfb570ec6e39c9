"""The pipeline's DuckDB SQL, one folder per stage; shipped inside the wheel.

Not code: ``tasks.core.sql`` reads these files through this package, so an
installed copy finds them wherever it lives. ``shell/`` holds the views and
reports of `nft1000 sql` and the demo.
"""
