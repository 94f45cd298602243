import pytest
from click.testing import CliRunner

from clipsql.cli import main


@pytest.fixture
def run(dsn, tiny_model):
    """Invoke `clipsql ARGS...` on the test database with the tiny model; checks exit 0 unless ok=False."""
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(main, [*args], env={"CLIPSQL_DATABASE_URL": dsn, "CLIPSQL_MODEL": tiny_model},
                               catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + (result.stderr or "")
        return result
    return invoke
