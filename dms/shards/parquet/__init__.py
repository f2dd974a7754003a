"""DuckDB/Parquet shards: one Parquet file per chunk and load, read by a locked-down DuckDB connection."""
