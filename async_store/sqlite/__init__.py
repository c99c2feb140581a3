"""The SQLite backend: everything that imports ``sqlite3`` or ``aiosqlite``."""

__all__: list[str] = []
