"""Long-running services, each a thin client of the database (VO services, alerts, QC, telemetry)."""
