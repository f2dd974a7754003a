"""Ingest: raw images and headers into the Data Backbone, telemetry into the EFD, catalogs into shards."""
