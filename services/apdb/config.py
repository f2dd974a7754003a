"""Configuration of the APDB (names and meanings follow lsst-dax-apdb's ApdbSqlConfig where it has them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApdbConfig(BaseModel):
    """How the APDB reads and writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(
        default="apdb",
        description="PostgreSQL schema holding Rubin's apdb.yaml tables (the control database's `apdb`).",
    )
    read_sources_months: int = Field(
        default=12,
        ge=0,
        le=120,
        description="History window of DiaSource reads, in months of 30 days before the visit; 0 reads none.",
    )
    read_forced_sources_months: int = Field(
        default=12,
        ge=0,
        le=120,
        description="History window of DiaForcedSource reads, in months of 30 days; 0 reads none.",
    )
    max_ids_per_read: int = Field(
        default=1_000_000,
        gt=0,
        description="Largest number of DiaObject ids one read may ask for (a larger list is an input error).",
    )
