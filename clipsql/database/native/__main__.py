"""``python -m clipsql.database.native conf``: the in-database model's settings for this
Python as postgresql.conf lines, for a server clipsql does not run itself (docker/Dockerfile.db
appends them to the sample every new cluster's configuration is made from, after
``make -C clipsql/database/native install``; a superuser then runs
``CREATE EXTENSION clipsql_native`` in the collection's database)."""

import sys

from clipsql.database import native

if __name__ == "__main__":
    if sys.argv[1:] != ["conf"]:
        sys.exit(__doc__)
    sys.stdout.write(native.settings_conf(native.python_settings()))
