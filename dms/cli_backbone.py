"""`dms backbone ...`, `dms archive` and `dms distribute`: the Data Backbone on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dms.cli import _data_dir, _friendly_errors, data_dir_option
from dms.errors import DMSError


def _backbone(
    ctx: click.Context, site: str | None = None, fsync: bool = True, checksum: str | None = None
) -> Any:
    from dms.deployment import Deployment
    from dms.services.backbone import Backbone
    from dms.services.backbone.checksums import DEFAULT
    from dms.services.backbone.sites import PRIMARY_SITE

    return Backbone(
        Deployment.open(_data_dir(ctx)), site=site or PRIMARY_SITE, fsync=fsync, checksum=checksum or DEFAULT
    )


def parse_data_id(items: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs as a data ID; integer values become integers (exposure=2025041500123)."""
    data_id: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DMSError(
                f"data ID item {item!r} is not KEY=VALUE (e.g. instrument=LSSTCam exposure=1 detector=94)"
            )
        data_id[key] = int(value) if value.lstrip("-").isdigit() else value
    return data_id


_SITE = click.option("--site", help="Site to read from / write to (default: summit).")
_CHECKSUM = click.option(
    "--checksum",
    type=click.Choice(["crc32c", "sha256"]),
    default="crc32c",
    show_default=True,
    help="Checksum algorithm of the stored files.",
)


@click.group()
def backbone() -> None:
    """The Data Backbone: datasets by data ID, sites, replication and verification."""


@backbone.command("put")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "dataset_type", required=True, help="Dataset type, e.g. objectTable.")
@click.option("--run", required=True, help="RUN collection to write to.")
@click.option("--dimensions", help="Register the dataset type with these comma-separated dimensions.")
@click.argument("data_id", nargs=-1)
@_SITE
@_CHECKSUM
@data_dir_option
@click.pass_context
@_friendly_errors
def put(
    ctx: click.Context,
    file: Path,
    dataset_type: str,
    run: str,
    dimensions: str | None,
    data_id: tuple[str, ...],
    site: str | None,
    checksum: str,
) -> None:
    """Store FILE (FITS or Parquet) as a dataset: dms backbone put FILE --type T --run R KEY=VALUE..."""
    dims = [d.strip() for d in dimensions.split(",")] if dimensions else None
    ref, created = _backbone(ctx, site, checksum=checksum).put(
        file, dataset_type, parse_data_id(data_id), run=run, dimensions=dims
    )
    click.echo(f"{'stored' if created else 'unchanged (already stored)'}: {ref.id} {ref.path}")


@backbone.command("get")
@click.option("--type", "dataset_type", required=True, help="Dataset type.")
@click.option(
    "--collection", "collections", multiple=True, help="Collections to search, in order (default: all runs)."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the file here.")
@click.argument("data_id", nargs=-1)
@_SITE
@data_dir_option
@click.pass_context
@_friendly_errors
def get(
    ctx: click.Context,
    dataset_type: str,
    collections: tuple[str, ...],
    output: Path | None,
    data_id: tuple[str, ...],
    site: str | None,
) -> None:
    """Read a dataset by data ID (checksum-checked); summarise it, or write it with -o."""
    from dms.services.backbone.errors import DatasetNotFoundError
    from dms.services.backbone.formats import format_named

    bb = _backbone(ctx, site)
    ident = parse_data_id(data_id)
    ref = bb.find(dataset_type, ident, list(collections) or None)
    if ref is None:
        raise DatasetNotFoundError(f"no {dataset_type} with data ID {json.dumps(ident, sort_keys=True)}")
    data = bb.read_bytes(ref)
    if output:
        output.write_bytes(data)
        click.echo(f"wrote {output} ({len(data)} bytes, sha256 verified)")
        return
    obj = format_named(ref.file_format or "").read(data)
    if ref.file_format == "fits":
        for index, hdu in enumerate(obj):
            click.echo(f"HDU {index} {hdu.name}: {type(hdu).__name__} {getattr(hdu, 'shape', '')}")
    else:
        click.echo(f"{obj.num_rows} rows: {obj.schema.to_string(show_schema_metadata=False)}")


@backbone.command("find")
@click.option("--type", "dataset_type", required=True, help="Dataset type.")
@click.option("--collection", "collections", multiple=True, help="Collections to search, in order.")
@click.argument("data_id", nargs=-1)
@_SITE
@data_dir_option
@click.pass_context
@_friendly_errors
def find(
    ctx: click.Context,
    dataset_type: str,
    collections: tuple[str, ...],
    data_id: tuple[str, ...],
    site: str | None,
) -> None:
    """Show where a dataset is: id, run, file path and checksum."""
    ref = _backbone(ctx, site).find(dataset_type, parse_data_id(data_id), list(collections) or None)
    if ref is None:
        raise DMSError(f"no {dataset_type} with data ID {' '.join(data_id)}")
    click.echo(f"{ref.id}\t{ref.run}\t{ref.path or '(no copy at this site)'}\t{ref.checksum or ''}")


@backbone.command("list")
@click.option("--type", "dataset_type", help="Only this dataset type.")
@click.option("--run", help="Only this RUN collection.")
@click.option("--limit", type=int, default=1000, show_default=True, help="At most this many.")
@click.argument("where", nargs=-1)
@_SITE
@data_dir_option
@click.pass_context
@_friendly_errors
def list_(
    ctx: click.Context,
    dataset_type: str | None,
    run: str | None,
    limit: int,
    where: tuple[str, ...],
    site: str | None,
) -> None:
    """List datasets, optionally restricted by a partial data ID (KEY=VALUE...)."""
    refs = _backbone(ctx, site).list(dataset_type, run=run, where=parse_data_id(where) or None, limit=limit)
    for ref in refs:
        data_id = json.dumps(ref.data_id, sort_keys=True)
        click.echo(f"{ref.dataset_type}\t{data_id}\t{ref.run}\t{ref.size_bytes or '-'}\t{ref.path or '-'}")


@backbone.command("verify")
@_SITE
@click.option(
    "--clean", is_flag=True, help="Remove orphaned files (older than an hour) and stale temp files."
)
@data_dir_option
@click.pass_context
@_friendly_errors
def verify_(ctx: click.Context, site: str | None, clean: bool) -> None:
    """Re-checksum every stored file; exit 1 if any is corrupted or missing."""
    from dms.services.backbone.verify import verify

    report = verify(_backbone(ctx), site, clean=clean, progress=True)
    for name, path, why in report.corrupt:
        click.echo(f"CORRUPT {name}:{path}: {why}")
    for name, path in report.missing:
        click.echo(f"MISSING {name}:{path}")
    for name, path in report.orphans:
        click.echo(f"orphan {name}:{path} (not registered)")
    click.echo(
        f"checked {report.checked} files: {report.ok} ok, {len(report.corrupt)} corrupt, "
        f"{len(report.missing)} missing, {len(report.orphans)} orphans"
        + (
            f" ({report.removed_orphans} removed, {report.removed_temp} temporary files removed)"
            if clean
            else ""
        )
    )
    if not report.healthy:
        raise click.exceptions.Exit(1)


@backbone.command("sites")
@data_dir_option
@click.pass_context
@_friendly_errors
def sites_(ctx: click.Context) -> None:
    """List the sites and their store roots."""
    from dms.services.backbone import sites

    bb = _backbone(ctx)
    with bb.begin() as conn:
        for site in sites.sites(conn).values():
            click.echo(f"{site.name}\t{site.role}\t{site.root}")


@backbone.group()
def policy() -> None:
    """Replication policies: which datasets each site should hold."""


@policy.command("add")
@click.argument("name")
@click.option("--site", required=True, help="Site that should hold the copies.")
@click.option("--type", "dataset_type", help="Only this dataset type.")
@click.option("--collection", "collection_pattern", help="Only runs matching this SQL LIKE pattern.")
@click.option("--cone", nargs=3, type=float, help="Only datasets within RA DEC RADIUS (degrees).")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher copies first.")
@data_dir_option
@click.pass_context
@_friendly_errors
def policy_add(
    ctx: click.Context,
    name: str,
    site: str,
    dataset_type: str | None,
    collection_pattern: str | None,
    cone: tuple[float, float, float] | None,
    priority: int,
) -> None:
    """Define replication policy NAME."""
    from dms.services.backbone.replication import Policy, add_policy

    with _backbone(ctx).begin() as conn:
        add_policy(conn, Policy(name, site, dataset_type, collection_pattern, cone or None, priority))
    click.echo(f"policy {name}: copies to {site}; run `dms backbone replicate`")


@policy.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def policy_list(ctx: click.Context) -> None:
    """List the replication policies."""
    import sqlalchemy as sa

    with _backbone(ctx).begin() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT name, site, dataset_type, collection_pattern, region_ra, region_dec, region_radius, "
                "priority, active FROM dms.replication_policy ORDER BY priority DESC, name"
            )
        )
        for r in rows:
            cone = (
                f"cone({r.region_ra},{r.region_dec},{r.region_radius})" if r.region_ra is not None else "any"
            )
            click.echo(
                f"{r.name}\t-> {r.site}\ttype={r.dataset_type or 'any'}\t"
                f"runs={r.collection_pattern or 'any'}\tregion={cone}\tpriority={r.priority}"
                f"{'' if r.active else ' (inactive)'}"
            )


@backbone.command("replicate")
@click.option("--site", help="Only copies to this site.")
@click.option("--max-attempts", type=int, default=3, show_default=True, help="Attempts before a task fails.")
@click.option("--no-fsync", is_flag=True, help="Do not flush each copy to disk (faster, less durable).")
@data_dir_option
@click.pass_context
@_friendly_errors
def replicate_(ctx: click.Context, site: str | None, max_attempts: int, no_fsync: bool) -> None:
    """Copy datasets to the sites the policies name; safe to interrupt and rerun (resumes)."""
    from dms.services.backbone.replication import replicate

    report = replicate(
        _backbone(ctx, fsync=not no_fsync), site=site, max_attempts=max_attempts, progress=True
    )
    click.echo(f"copied {report.copied} files ({report.bytes_copied} bytes), {len(report.failed)} failed")
    for dataset, name, why in report.failed:
        click.echo(f"FAILED {dataset} -> {name}: {why}")
    if report.failed:
        raise click.exceptions.Exit(1)


@backbone.command("status")
@data_dir_option
@click.pass_context
@_friendly_errors
def status_(ctx: click.Context) -> None:
    """Datasets per site and replication tasks per state (what is pending)."""
    import sqlalchemy as sa

    from dms.services.backbone.replication import plan, status

    with _backbone(ctx).begin() as conn:
        plan(conn)
        for r in conn.execute(
            sa.text(
                "SELECT s.name, count(r.dataset_id) AS n, coalesce(sum(r.size_bytes), 0) AS b "
                "FROM dms.site s "
                "LEFT JOIN dms.datastore_record r ON r.site = s.name GROUP BY s.name ORDER BY s.name"
            )
        ):
            click.echo(f"site {r.name}: {r.n} files, {r.b} bytes")
        for name, state, n, size in status(conn):
            click.echo(f"replication to {name}: {n} {state} ({size} bytes)")


@click.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--watch",
    "watch_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Archive files as they appear in this directory (until interrupted).",
)
@click.option(
    "--catch-up",
    "landing",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Archive missed exposures (from the exposure log) found in this landing directory.",
)
@click.option("--once", is_flag=True, help="With --watch: one scan, then exit.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="With --watch: seconds between scans."
)
@click.option("--no-fsync", is_flag=True, help="Do not flush each file to disk before registering it.")
@_CHECKSUM
@data_dir_option
@click.pass_context
@_friendly_errors
def archive(
    ctx: click.Context,
    files: tuple[Path, ...],
    watch_dir: Path | None,
    landing: tuple[Path, ...],
    once: bool,
    interval: float,
    no_fsync: bool,
    checksum: str,
) -> None:
    """Archive raw FITS FILES (single or multi-extension) into the Data Backbone, registry, ConsDB and
    ObsCore. Each file is atomic; bad files are reported and the rest still archive; exit 1 if any failed."""
    from dms.services.archiver.ingest import ArchiveResult, archive_files

    if not files and not watch_dir and not landing:
        raise DMSError("give FILES to archive, --watch DIR or --catch-up DIR")
    bb = _backbone(ctx, fsync=not no_fsync, checksum=checksum)
    results: list[ArchiveResult] = []

    def show(result: ArchiveResult) -> None:
        click.echo(
            f"{result.status.upper() if result.status == 'failed' else result.status}: {result.message}"
        )

    for result in archive_files(bb, files, progress=len(files) > 1):
        show(result)
        results.append(result)
    if landing:
        from dms.services.archiver.catchup import catch_up

        report = catch_up(bb, list(landing))
        click.echo(f"catch-up: {report.missed} missed exposures, {len(report.not_found)} still without files")
        for result in report.results:
            show(result)
        results.extend(report.results)
    if watch_dir:
        from dms.services.archiver.watch import watch

        click.echo(f"watching {watch_dir} (Ctrl-C to stop)" if not once else f"scanning {watch_dir}")
        try:
            results.extend(watch(bb, watch_dir, interval=interval, once=once, report=show))
        except KeyboardInterrupt:
            click.echo("stopped")
    failed = sum(r.status == "failed" for r in results)
    click.echo(f"{len(results) - failed} archived or already archived, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


@click.group(invoke_without_command=True)
@click.option("--to", "name", help="Deliver to this subscription only.")
@data_dir_option
@click.pass_context
@_friendly_errors
def distribute(ctx: click.Context, name: str | None) -> None:
    """Deliver new data products (files, tables as Parquet, a checksummed manifest) to subscribers."""
    if ctx.invoked_subcommand is not None:
        return
    from dms.services.backbone.distribute import distribute as run

    for delivery in run(_backbone(ctx), name):
        click.echo(
            f"{delivery.subscription}: {len(delivery.delivered)} delivered "
            f"({delivery.bytes_delivered} bytes), {delivery.unchanged} unchanged"
        )


@distribute.command("subscribe")
@click.argument("name")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@click.option("--type", "dataset_types", multiple=True, help="A dataset type whose files are delivered.")
@click.option("--run", "runs", multiple=True, help="Only datasets of this run (default: every run).")
@click.option("--table", "tables", multiple=True, help="A control database table delivered as Parquet.")
@data_dir_option
@click.pass_context
@_friendly_errors
def subscribe_(
    ctx: click.Context,
    name: str,
    destination: Path,
    dataset_types: tuple[str, ...],
    runs: tuple[str, ...],
    tables: tuple[str, ...],
) -> None:
    """Subscribe partner NAME, delivering to DESTINATION."""
    from dms.services.backbone.distribute import Subscription, subscribe

    with _backbone(ctx).begin() as conn:
        subscribe(conn, Subscription(name, destination, list(dataset_types), list(runs), list(tables)))
    click.echo(f"subscribed {name}: run `dms distribute` to deliver")


@distribute.command("list")
@data_dir_option
@click.pass_context
@_friendly_errors
def subscriptions(ctx: click.Context) -> None:
    """List the subscriptions."""
    import sqlalchemy as sa

    with _backbone(ctx).begin() as conn:
        for r in conn.execute(sa.text("SELECT * FROM dms.distribution_subscription ORDER BY name")):
            click.echo(
                f"{r.name}\t{r.destination}\ttypes={','.join(r.dataset_types) or '-'}\t"
                f"runs={','.join(r.runs) or 'all'}\ttables={','.join(r.tables) or '-'}"
            )


COMMANDS = (backbone, archive, distribute)
