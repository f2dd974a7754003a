"""IVOA services over the DMS database: TAP 1.1 (ADQL 2.1), Simple Cone Search, SIA v2, DataLink, VOSI.

Each service is a thin layer: it validates the protocol parameters, turns them into one query, hands that to
a :class:`dms.services.vo.executor.QueryExecutor` and writes the result (VOTable and friends).
"""
