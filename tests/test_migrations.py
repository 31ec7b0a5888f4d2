"""The schema comes only from the migrations, and they match the models."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from service.migrate import alembic_config, downgrade, head_revision, upgrade


def test_migrations_build_the_schema_on_an_empty_database_and_match_the_models(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"

    upgrade(url)

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert {"api_key", "evaluation"} <= tables
    assert version == head_revision()
    # Raises if autogenerate would find any difference between the models and the schema.
    command.check(alembic_config(url))


def test_migrations_downgrade_to_nothing_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cycle.db'}"
    upgrade(url)

    downgrade(url, "base")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'cycle.db'}")
    with engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
    engine.dispose()

    upgrade(url)
    command.check(alembic_config(url))
