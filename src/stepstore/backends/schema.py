"""The tables of a store, and the ordered migrations that build them in each dialect.

Every dialect's schema version counts its own list of migrations: entry ``i`` brings a
database to version ``i + 1``, version 0 being a database without the ``meta`` table.
The lists are append-only, so a store made by an earlier stepstore opens and migrates:
SQLite's first four and the servers' first three versions are kept as released (the
servers started from SQLite's second version, in one step). Tables added since are
declared once (:class:`Table`) and rendered for each dialect by :func:`create_table`.

Column types of a declared table, per dialect: ``id`` (a run id), ``name`` (an indexed
name), ``text``, ``int`` (64 bits), ``float`` (a double) and ``blob``; ``?`` after the
type allows NULL.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Declared column types in each dialect.
TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "id": "TEXT",
        "name": "TEXT",
        "text": "TEXT",
        "int": "INTEGER",
        "float": "REAL",
        "blob": "BLOB",
    },
    "postgresql": {
        "id": 'TEXT COLLATE "C"',
        "name": 'TEXT COLLATE "C"',
        "text": "TEXT",
        "int": "BIGINT",
        "float": "DOUBLE PRECISION",
        "blob": "BYTEA",
    },
    "mysql": {
        "id": "VARCHAR(128)",
        "name": "VARCHAR(512)",
        "text": "LONGTEXT",
        "int": "BIGINT",
        "float": "DOUBLE",
        "blob": "LONGBLOB",
    },
}
_TEXT = TYPES["postgresql"]["id"]
#: Options of every MySQL table; ``{collation}`` is the server's binary no-pad collation.
_TABLE = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}"


@dataclass(frozen=True)
class Table:
    """A table declared once for every dialect.

    Attributes:
        name: The table's name.
        columns: ``(name, type)`` pairs, types as the module docstring lists them.
        indexes: ``(name, columns)`` of its (non-unique) indexes.
        run_column: A column referencing ``runs (id)``, if any.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    run_column: str | None = None


def create_table(table: Table, dialect: str) -> list[str]:
    """The statements creating ``table`` in ``dialect``; each can run again harmlessly
    (MySQL commits DDL statement by statement, so an interrupted migration is redone)."""
    types = TYPES[dialect]
    parts = [
        f'"{name}" {types[kind.rstrip("?")]}' + ("" if kind.endswith("?") else " NOT NULL")
        for name, kind in table.columns
    ]
    if table.run_column:
        parts.append(f'FOREIGN KEY ("{table.run_column}") REFERENCES runs (id)')
    indexes = [(name, ", ".join(f'"{c}"' for c in columns)) for name, columns in table.indexes]
    if dialect == "mysql":
        parts += [f"INDEX {name} ({columns})" for name, columns in indexes]
    body = ",\n    ".join(parts)
    statements = [f"CREATE TABLE IF NOT EXISTS {table.name} (\n    {body})"]
    if dialect == "mysql":
        return [statements[0] + _TABLE]
    return statements + [
        f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({columns})"
        for name, columns in indexes
    ]


#: Events of a run (a flight recorder's trigger firing, say), in the order they happened.
EVENTS = Table(
    "events",
    (
        ("run_id", "id"),
        ("rank", "int"),
        ("step", "int"),
        ("time", "float"),
        ("trigger", "name"),
        ("key", "text?"),
        ("reason", "text"),
    ),
    indexes=(("events_run", ("run_id", "time")),),
    run_column="run_id",
)

#: SQLite, versions 1-4 as released.
SQLITE: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            created REAL NOT NULL,
            ended REAL,
            heartbeat REAL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            git_commit TEXT,
            params TEXT NOT NULL,
            tags TEXT NOT NULL,
            env TEXT NOT NULL,
            capture TEXT NOT NULL,
            writer TEXT NOT NULL,
            journal_seq INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX runs_project ON runs (project, created)",
        "CREATE INDEX runs_name ON runs (name)",
        """CREATE TABLE run_params (
            run_id TEXT NOT NULL REFERENCES runs (id),
            path TEXT NOT NULL,
            num REAL,
            str TEXT,
            PRIMARY KEY (run_id, path))""",
        "CREATE INDEX run_params_num ON run_params (path, num)",
        "CREATE INDEX run_params_str ON run_params (path, str)",
        """CREATE TABLE run_tags (
            run_id TEXT NOT NULL REFERENCES runs (id),
            tag TEXT NOT NULL,
            PRIMARY KEY (run_id, tag))""",
        "CREATE INDEX run_tags_tag ON run_tags (tag)",
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            min REAL,
            max REAL,
            last REAL,
            first_step INTEGER,
            last_step INTEGER,
            UNIQUE (run_id, key))""",
        """CREATE TABLE chunks (
            series_id INTEGER NOT NULL REFERENCES series (id),
            seq INTEGER NOT NULL,
            first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL,
            min_epoch INTEGER,
            max_epoch INTEGER,
            count INTEGER NOT NULL,
            sealed INTEGER NOT NULL,
            stats BLOB NOT NULL,
            checksum INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (series_id, seq))""",
        "CREATE INDEX chunks_steps ON chunks (series_id, last_step)",
    ],
    [
        "ALTER TABLE runs ADD COLUMN array_store TEXT",
        """CREATE TABLE tensor_segments (
            series_id INTEGER NOT NULL REFERENCES series (id),
            segment INTEGER NOT NULL,
            shape TEXT NOT NULL,
            dtype TEXT NOT NULL,
            chunk_steps INTEGER NOT NULL,
            codec TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (series_id, segment))""",
        """CREATE TABLE tensor_chunks (
            series_id INTEGER NOT NULL REFERENCES series (id),
            segment INTEGER NOT NULL,
            chunk INTEGER NOT NULL,
            first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL,
            count INTEGER NOT NULL,
            sealed INTEGER NOT NULL,
            steps BLOB NOT NULL,
            epochs BLOB NOT NULL,
            times BLOB NOT NULL,
            checksums BLOB NOT NULL,
            PRIMARY KEY (series_id, segment, chunk))""",
        """CREATE TABLE records (
            series_id INTEGER NOT NULL REFERENCES series (id),
            step INTEGER NOT NULL,
            epoch INTEGER,
            time INTEGER NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX records_steps ON records (series_id, step)",
        """CREATE TABLE images (
            series_id INTEGER NOT NULL REFERENCES series (id),
            step INTEGER NOT NULL,
            position INTEGER NOT NULL,
            epoch INTEGER,
            time INTEGER NOT NULL,
            caption TEXT,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            checksum INTEGER NOT NULL,
            PRIMARY KEY (series_id, step, position))""",
        """CREATE TABLE artifacts (
            run_id TEXT NOT NULL REFERENCES runs (id),
            name TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_id, name))""",
    ],
    [  # ranks="all": series per (run, key, rank); the ranks' journal positions
        """CREATE TABLE series_v3 (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            key TEXT NOT NULL,
            kind TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            min REAL,
            max REAL,
            last REAL,
            first_step INTEGER,
            last_step INTEGER,
            rank INTEGER NOT NULL DEFAULT 0,
            UNIQUE (run_id, key, rank))""",
        "INSERT INTO series_v3 (id, run_id, key, kind, count, min, max, last, first_step, "
        "last_step) SELECT id, run_id, key, kind, count, min, max, last, first_step, last_step "
        "FROM series",
        "DROP TABLE series",
        "ALTER TABLE series_v3 RENAME TO series",
        """CREATE TABLE run_ranks (
            run_id TEXT NOT NULL REFERENCES runs (id),
            rank INTEGER NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            status TEXT NOT NULL,
            heartbeat REAL,
            ended REAL,
            journal_seq INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, rank))""",
    ],
    [  # check --repair keeps the intact rows of a chunk: where each lies in its chunk
        "ALTER TABLE tensor_chunks ADD COLUMN positions BLOB NOT NULL DEFAULT x''",
    ],
]

#: PostgreSQL, versions 1-3 as released.
POSTGRESQL: list[list[str]] = [
    [
        f'CREATE TABLE meta ("key" {_TEXT} PRIMARY KEY, value TEXT NOT NULL)',
        f"""CREATE TABLE runs (
            id {_TEXT} PRIMARY KEY,
            project {_TEXT} NOT NULL,
            name {_TEXT} NOT NULL,
            status {_TEXT} NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            ended DOUBLE PRECISION,
            heartbeat DOUBLE PRECISION,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            git_commit TEXT,
            params TEXT NOT NULL,
            tags TEXT NOT NULL,
            env TEXT NOT NULL,
            capture TEXT NOT NULL,
            writer TEXT NOT NULL,
            journal_seq BIGINT NOT NULL DEFAULT 0,
            array_store TEXT)""",
        "CREATE INDEX runs_project ON runs (project, created)",
        "CREATE INDEX runs_name ON runs (name)",
        f"""CREATE TABLE run_params (
            run_id {_TEXT} NOT NULL REFERENCES runs (id),
            path {_TEXT} NOT NULL,
            num DOUBLE PRECISION,
            str {_TEXT},
            PRIMARY KEY (run_id, path))""",
        "CREATE INDEX run_params_num ON run_params (path, num)",
        f"""CREATE TABLE run_tags (
            run_id {_TEXT} NOT NULL REFERENCES runs (id),
            tag {_TEXT} NOT NULL,
            PRIMARY KEY (run_id, tag))""",
        "CREATE INDEX run_tags_tag ON run_tags (tag)",
        f"""CREATE TABLE series (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            run_id {_TEXT} NOT NULL REFERENCES runs (id),
            "key" {_TEXT} NOT NULL,
            kind {_TEXT} NOT NULL,
            count BIGINT NOT NULL DEFAULT 0,
            min DOUBLE PRECISION,
            max DOUBLE PRECISION,
            last DOUBLE PRECISION,
            first_step BIGINT,
            last_step BIGINT)""",
        'CREATE UNIQUE INDEX series_run_key ON series (run_id, md5("key"))',
        """CREATE TABLE chunks (
            series_id BIGINT NOT NULL REFERENCES series (id),
            seq BIGINT NOT NULL,
            first_step BIGINT NOT NULL,
            last_step BIGINT NOT NULL,
            min_epoch BIGINT,
            max_epoch BIGINT,
            count BIGINT NOT NULL,
            sealed BOOLEAN NOT NULL,
            stats BYTEA NOT NULL,
            checksum BIGINT NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (series_id, seq))""",
        "ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL",
        "CREATE INDEX chunks_steps ON chunks (series_id, last_step)",
        """CREATE TABLE tensor_segments (
            series_id BIGINT NOT NULL REFERENCES series (id),
            segment BIGINT NOT NULL,
            shape TEXT NOT NULL,
            dtype TEXT NOT NULL,
            chunk_steps BIGINT NOT NULL,
            codec TEXT NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (series_id, segment))""",
        """CREATE TABLE tensor_chunks (
            series_id BIGINT NOT NULL REFERENCES series (id),
            segment BIGINT NOT NULL,
            chunk BIGINT NOT NULL,
            first_step BIGINT NOT NULL,
            last_step BIGINT NOT NULL,
            count BIGINT NOT NULL,
            sealed BOOLEAN NOT NULL,
            steps BYTEA NOT NULL,
            epochs BYTEA NOT NULL,
            times BYTEA NOT NULL,
            checksums BYTEA NOT NULL,
            PRIMARY KEY (series_id, segment, chunk))""",
        """CREATE TABLE records (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            series_id BIGINT NOT NULL REFERENCES series (id),
            step BIGINT NOT NULL,
            epoch BIGINT,
            time BIGINT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX records_steps ON records (series_id, step)",
        """CREATE TABLE images (
            series_id BIGINT NOT NULL REFERENCES series (id),
            step BIGINT NOT NULL,
            position BIGINT NOT NULL,
            epoch BIGINT,
            time BIGINT NOT NULL,
            caption TEXT,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            checksum BIGINT NOT NULL,
            PRIMARY KEY (series_id, step, position))""",
        f"""CREATE TABLE artifacts (
            run_id {_TEXT} NOT NULL REFERENCES runs (id),
            name {_TEXT} NOT NULL,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            sha256 TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (run_id, name))""",
    ],
    [  # ranks="all": series per (run, key, rank); the ranks' journal positions
        'ALTER TABLE series ADD COLUMN "rank" BIGINT NOT NULL DEFAULT 0',
        "DROP INDEX series_run_key",
        'CREATE UNIQUE INDEX series_run_key ON series (run_id, md5("key"), "rank")',
        f"""CREATE TABLE run_ranks (
            run_id {_TEXT} NOT NULL REFERENCES runs (id),
            "rank" BIGINT NOT NULL,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            status {_TEXT} NOT NULL,
            heartbeat DOUBLE PRECISION,
            ended DOUBLE PRECISION,
            journal_seq BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, "rank"))""",
    ],
    [  # check --repair keeps the intact rows of a chunk: where each lies in its chunk
        "ALTER TABLE tensor_chunks ADD COLUMN positions BYTEA NOT NULL DEFAULT ''",
    ],
]

#: MySQL and MariaDB, versions 1-3 as released; ``{collation}`` is filled in with the
#: server's binary no-pad collation.
MYSQL: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS meta (
            "key" VARCHAR(64) NOT NULL PRIMARY KEY,
            value TEXT NOT NULL)"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS runs (
            id VARCHAR(128) NOT NULL PRIMARY KEY,
            project VARCHAR(512) NOT NULL,
            name VARCHAR(512) NOT NULL,
            status VARCHAR(32) NOT NULL,
            created DOUBLE NOT NULL,
            ended DOUBLE,
            heartbeat DOUBLE,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            git_commit TEXT,
            params LONGTEXT NOT NULL,
            tags LONGTEXT NOT NULL,
            env LONGTEXT NOT NULL,
            capture LONGTEXT NOT NULL,
            writer LONGTEXT NOT NULL,
            journal_seq BIGINT NOT NULL DEFAULT 0,
            array_store TEXT,
            INDEX runs_project (project, created),
            INDEX runs_name (name))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS run_params (
            run_id VARCHAR(128) NOT NULL,
            path VARCHAR(512) NOT NULL,
            num DOUBLE,
            str LONGTEXT,
            PRIMARY KEY (run_id, path),
            INDEX run_params_num (path, num),
            FOREIGN KEY (run_id) REFERENCES runs (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS run_tags (
            run_id VARCHAR(128) NOT NULL,
            tag VARCHAR(512) NOT NULL,
            PRIMARY KEY (run_id, tag),
            INDEX run_tags_tag (tag),
            FOREIGN KEY (run_id) REFERENCES runs (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS series (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            run_id VARCHAR(128) NOT NULL,
            "key" VARCHAR(1024) NOT NULL,
            key_hash BINARY(32) AS (UNHEX(SHA2("key", 256))) STORED,
            kind VARCHAR(16) NOT NULL,
            count BIGINT NOT NULL DEFAULT 0,
            min DOUBLE,
            max DOUBLE,
            last DOUBLE,
            inf_flags TINYINT NOT NULL DEFAULT 0,
            first_step BIGINT,
            last_step BIGINT,
            UNIQUE KEY series_run_key (run_id, key_hash),
            FOREIGN KEY (run_id) REFERENCES runs (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS chunks (
            series_id BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            first_step BIGINT NOT NULL,
            last_step BIGINT NOT NULL,
            min_epoch BIGINT,
            max_epoch BIGINT,
            count BIGINT NOT NULL,
            sealed BOOLEAN NOT NULL,
            stats BLOB NOT NULL,
            checksum BIGINT NOT NULL,
            data LONGBLOB NOT NULL,
            PRIMARY KEY (series_id, seq),
            INDEX chunks_steps (series_id, last_step),
            FOREIGN KEY (series_id) REFERENCES series (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS tensor_segments (
            series_id BIGINT NOT NULL,
            segment BIGINT NOT NULL,
            shape TEXT NOT NULL,
            dtype VARCHAR(64) NOT NULL,
            chunk_steps BIGINT NOT NULL,
            codec VARCHAR(64) NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (series_id, segment),
            FOREIGN KEY (series_id) REFERENCES series (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS tensor_chunks (
            series_id BIGINT NOT NULL,
            segment BIGINT NOT NULL,
            chunk BIGINT NOT NULL,
            first_step BIGINT NOT NULL,
            last_step BIGINT NOT NULL,
            count BIGINT NOT NULL,
            sealed BOOLEAN NOT NULL,
            steps LONGBLOB NOT NULL,
            epochs LONGBLOB NOT NULL,
            times LONGBLOB NOT NULL,
            checksums LONGBLOB NOT NULL,
            PRIMARY KEY (series_id, segment, chunk),
            FOREIGN KEY (series_id) REFERENCES series (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS records (
            id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            series_id BIGINT NOT NULL,
            step BIGINT NOT NULL,
            epoch BIGINT,
            time BIGINT NOT NULL,
            data LONGTEXT NOT NULL,
            INDEX records_steps (series_id, step),
            FOREIGN KEY (series_id) REFERENCES series (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS images (
            series_id BIGINT NOT NULL,
            step BIGINT NOT NULL,
            position BIGINT NOT NULL,
            epoch BIGINT,
            time BIGINT NOT NULL,
            caption TEXT,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            checksum BIGINT NOT NULL,
            PRIMARY KEY (series_id, step, position),
            FOREIGN KEY (series_id) REFERENCES series (id))"""
        + _TABLE,
        """CREATE TABLE IF NOT EXISTS artifacts (
            run_id VARCHAR(128) NOT NULL,
            name VARCHAR(512) NOT NULL,
            path TEXT NOT NULL,
            size BIGINT NOT NULL,
            sha256 VARCHAR(64) NOT NULL,
            created DOUBLE NOT NULL,
            PRIMARY KEY (run_id, name),
            FOREIGN KEY (run_id) REFERENCES runs (id))"""
        + _TABLE,
    ],
    [  # ranks="all": series per (run, key, rank); the ranks' journal positions
        """CREATE TABLE IF NOT EXISTS run_ranks (
            run_id VARCHAR(128) NOT NULL,
            "rank" BIGINT NOT NULL,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            status VARCHAR(16) NOT NULL,
            heartbeat DOUBLE,
            ended DOUBLE,
            journal_seq BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, "rank"),
            FOREIGN KEY (run_id) REFERENCES runs (id))"""
        + _TABLE,
        # one statement, so that it applies whole or not at all (MySQL DDL autocommits)
        'ALTER TABLE series ADD COLUMN "rank" BIGINT NOT NULL DEFAULT 0, '
        "DROP INDEX series_run_key, "
        'ADD UNIQUE KEY series_run_key (run_id, key_hash, "rank")',
    ],
    [  # check --repair keeps the intact rows of a chunk: where each lies in its chunk
        'ALTER TABLE tensor_chunks ADD COLUMN "positions" LONGBLOB NOT NULL',
    ],
]

#: Each dialect's migrations, by :attr:`~stepstore.backends.dialect.Dialect.name`.
MIGRATIONS: dict[str, list[list[str]]] = {
    dialect: [*released, create_table(EVENTS, dialect)]
    for dialect, released in (("sqlite", SQLITE), ("postgresql", POSTGRESQL), ("mysql", MYSQL))
}
