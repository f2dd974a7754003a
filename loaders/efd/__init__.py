"""The Engineering and Facility Database (EFD) in DMS: topics, telemetry ingest, the transformed EFD.

* :mod:`.topics`: the topic registry (``dms.efd_topic``) and each topic's typed, time-partitioned sample
  table in the PostgreSQL schema ``efd``;
* :mod:`.ingest`: ``dms efd load`` - JSON lines, Parquet, CSV and InfluxDB line protocol, bulk-copied in
  one transaction per file;
* :mod:`.transform`: the configuration of the transformed EFD and runs of its stored procedures.
"""
