"""Primary keys read from ``pg_catalog``, so that logins that do not own the tables see them.

DataJoint 2.3.5's PostgreSQL adapter reads primary keys from ``information_schema.table_constraints``
and ``key_column_usage``, which show a table's constraints only to roles holding a privilege other than
SELECT on it (SQL-standard visibility). A read-only analyst then sees tables without primary keys and
DataJoint fails on its first query (``SELECT count(DISTINCT )``), and a worker sees none on the
configuration tables it may only read. ``pg_constraint`` is readable by every role; these two queries
return the same rows from it.
"""

from __future__ import annotations

from datajoint.adapters.postgres import PostgreSQLAdapter


class CatalogPostgreSQLAdapter(PostgreSQLAdapter):
    """DataJoint's PostgreSQL adapter with primary-key introspection from ``pg_catalog``."""

    def get_primary_key_sql(self, schema_name: str, table_name: str) -> str:
        return (
            "SELECT a.attname AS column_name FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            f"WHERE c.contype = 'p' AND n.nspname = {self.quote_string(schema_name)} "
            f"AND t.relname = {self.quote_string(table_name)} ORDER BY k.ord"
        )

    def load_primary_keys_sql(self, schemas_list: str, like_pattern: str) -> str:
        return (
            "SELECT '\"' || n.nspname || '\".\"' || t.relname || '\"' AS tab, a.attname AS column_name "
            "FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "CROSS JOIN LATERAL unnest(c.conkey) AS k(attnum) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            f"WHERE c.contype = 'p' AND t.relname NOT LIKE {like_pattern} AND n.nspname IN ({schemas_list})"
        )


def use_catalog_introspection(connection) -> None:
    """Give ``connection`` the catalog-based adapter (in place; same backend, same behaviour otherwise)."""
    if isinstance(connection.adapter, PostgreSQLAdapter):
        connection.adapter.__class__ = CatalogPostgreSQLAdapter
