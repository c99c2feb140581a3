"""Example applications built on async_store (not part of the installed package)."""
