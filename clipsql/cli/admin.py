"""``clipsql admin sql``: what a database administrator runs once, where clipsql's owner may
not create roles (a managed server), so that SQL filters log in as ``clipsql_filter``."""

from __future__ import annotations

import click

from clipsql.cli.options import db_option
from clipsql.cli.output import friendly


@click.group("admin")
def admin_group():
    """Set-up a database administrator runs (once per database)."""


@admin_group.command("sql")
@db_option
@click.option("--owner", metavar="ROLE",
              help="The role that owns clipsql's tables and runs its migrations (default: "
                   "the --db connection's user): its later tables are granted too.")
@click.option("--database", metavar="NAME",
              help="The database to grant CONNECT on and to log in to (default: --db's).")
@click.option("--filter-password", metavar="TEXT",
              help="The filter role's password (default: a new random one).")
@friendly
def admin_sql(dsn, owner, database, filter_password):
    """Print the SQL that gives SQL filters their least-privilege login.

    A superuser runs it in the collection's database (e.g. piped to psql); its last line is
    the CLIPSQL_FILTER_DATABASE_URL to set for clipsql. Generated from the database's
    clipsql schema (open the collection once as its owner first); running it again is safe.
    """
    from clipsql.database import connection, filter_setup

    with connection.connect(connection.resolve_dsn(dsn)) as conn:
        sql = filter_setup.admin_sql(conn, owner=owner, database=database,
                                     password=filter_password)
    click.echo(sql, nl=False)
    click.echo("clipsql: run this as a superuser in that database, e.g. "
               "clipsql admin sql | psql -v ON_ERROR_STOP=1 -d SUPERUSER-URL; then set "
               "CLIPSQL_FILTER_DATABASE_URL as its last line says", err=True)


COMMANDS = [admin_group]
