"""PostgreSQL shards: one table per catalog table, loaded by COPY, read as the reader role."""
