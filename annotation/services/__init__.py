"""Use cases behind the UI and the CLI: each function is one user action and one transaction.

The entry point (app.py) reaches storage only through this package, so the dependency arrows stay
app -> annotation -> {alignment, storage}.
"""
from storage.db import Database, open_database
from storage.errors import InputError

__all__ = ["Database", "InputError", "open_database"]
