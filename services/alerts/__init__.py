"""Alerts: packets in Rubin's Avro schema (and, being built, their archive and distribution)."""
