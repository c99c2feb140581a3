"""SQLAlchemy Core statements (the extra ``async-store[sqlalchemy]``), accepted by every query
method: ``await db.fetch_all(select(notes).where(notes.c.done == False))``.

A statement is compiled with its backend's dialect once per *shape*: SQLAlchemy's cache key
tells two statements apart only by their structure, so ``select(notes).where(notes.c.id == 1)``
and ``... == 2`` share one compiled form, and only the values are taken from each (this is what
SQLAlchemy's own engine caches; compiling costs a hundred times more than looking up). Values go
through the column types' bind processors, rows through their result processors (DateTime, Date,
Time, Numeric, Enum, JSON, Boolean, ``TypeDecorator``), and a row answers to ``row[notes.c.id]``
as to ``row["id"]``. Parameters of a statement are a mapping, as in SQLAlchemy's
``connection.execute(statement, {...})``: for ``notes.insert()`` they name the columns to
insert, as encode/databases' ``execute(query, values)`` did.

Nothing here imports SQLAlchemy until a statement that is not a ``str`` arrives: the package
works without the extra, and its import time does not pay for it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import QueryError

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.sql.compiler import Compiled

__all__ = ["CACHE_SIZE", "CoreRow", "Prepared", "Shape", "Statements"]

CACHE_SIZE = 500
"""Compiled shapes kept per backend (SQLAlchemy's engine keeps 500 too); past it the oldest is
dropped. An application has a few dozen shapes; the bound keeps a program that builds SQL text
into ``text()`` from growing without limit."""

Processor = Callable[[Any], Any]


class Shape:
    """One compiled statement: its SQL, the names of its positional parameters with their bind
    processors, what kind of statement it is, and the columns of its rows."""

    __slots__ = (
        "_columns",
        "_own",
        "compiled",
        "ddl",
        "defaults",
        "dialect",
        "expands",
        "inserts",
        "names",
        "processors",
        "sql",
        "writes",
    )

    def __init__(self, compiled: Compiled, dialect: Dialect, *, ddl: bool) -> None:
        self.compiled = compiled
        self.dialect = dialect
        self.ddl = ddl
        self.sql: str = compiled.string
        facts: Any = compiled  # DDL compilers lack most of what statement compilers have
        self.names: tuple[str, ...] = tuple(getattr(facts, "positiontup", None) or ())
        binds = getattr(facts, "_bind_processors", {})
        self.processors: tuple[Processor | None, ...] = tuple(binds.get(n) for n in self.names)
        # Expanding IN (...) parameters and literal_execute values change the SQL per call.
        self.expands = bool(
            getattr(facts, "post_compile_params", None)
            or getattr(facts, "literal_execute_params", None)
        )
        # Columns whose Python-side default (onupdate for an update) fills a value the call
        # left out: SQLAlchemy's engine computes them per execution, and so does values().
        prefetch = [(c, c.default) for c in getattr(facts, "insert_prefetch", ())]
        prefetch += [(c, c.onupdate) for c in getattr(facts, "update_prefetch", ())]
        self.defaults: tuple[tuple[str, Any], ...] = ()
        if prefetch:
            key = facts._within_exec_param_key_getter
            self.defaults = tuple((key(column), default) for column, default in prefetch)
        self.inserts = bool(getattr(facts, "isinsert", False))
        self.writes = ddl or (
            self.inserts or bool(getattr(facts, "isupdate", False) or facts.isdelete)
        )
        self._columns: Columns | None = None
        own_key = getattr(facts, "cache_key", None)
        self._own = own_key[1] if own_key is not None else None

    def values(self, parameters: Mapping[str, Any] | None, extracted: Any) -> Prepared:
        """The SQL and positional values of one call: ``parameters`` given to it, ``extracted``
        the literal values of the statement object (from its cache key)."""
        if self.ddl:
            return Prepared(self.sql, [], self)
        compiled: Any = self.compiled
        try:
            if extracted is None or extracted is self._own:
                # The statement that was compiled (the same object, or no cache key): its
                # values are the compiled form's own, and matching them up costs 2 us.
                named = compiled.construct_params(parameters)
            else:
                named = compiled.construct_params(parameters, extracted_parameters=extracted)
            if self.defaults:
                _fill_defaults(self.defaults, named)
            if self.expands:
                expanded = compiled._process_parameters_for_postcompile(named)
                sql, names = expanded.statement, expanded.positiontup
                processors = [expanded.processors.get(name) for name in names]
                named = expanded.parameters
                return Prepared(sql, _bound(names, processors, named), self)
        except QueryError:
            raise
        except Exception as exc:
            raise QueryError(f"{_reason(exc)} [sql: {self.sql}]") from None
        return Prepared(self.sql, _bound(self.names, self.processors, named), self)

    def rows(
        self, names: Callable[[], Sequence[str]], rows: Iterable[Sequence[Any]]
    ) -> list[CoreRow]:
        """``rows`` as :class:`CoreRow` s, their values through the result processors;
        ``names()`` gives the names of their columns (the cursor's description). Runs on the
        connection's thread."""
        columns = self._columns
        if columns is not None and columns.fixed:
            return columns.rows(rows)
        found = tuple(names())
        if columns is None or columns.names != found:
            # SQL text (text("SELECT * ...")) may give other columns once a table changed.
            columns = self._columns = Columns(self, found)
        return columns.rows(rows)


class Prepared:
    """One call of a statement: the SQL to run, its positional values, and its :class:`Shape`."""

    __slots__ = ("shape", "sql", "values")

    def __init__(self, sql: str, values: list[Any], shape: Shape) -> None:
        self.sql = sql
        self.values = values
        self.shape = shape


def _fill_defaults(defaults: Sequence[tuple[str, Any]], named: dict[str, Any]) -> None:
    context = _DefaultContext(named)
    for name, default in defaults:
        if default is None:
            named[name] = None
        elif default.is_scalar:
            named[name] = default.arg
        elif default.is_callable:
            named[name] = default.arg(context)
        else:
            raise QueryError(
                f"the default of :{name} is a {type(default).__name__}, which async_store "
                "does not compute; give the value, or make the default a server default"
            )


class _DefaultContext:
    """What a column default's function is given, as SQLAlchemy gives it a context:
    ``context.get_current_parameters()`` holds the values of the row being written."""

    __slots__ = ("_named",)

    def __init__(self, named: dict[str, Any]) -> None:
        self._named = named

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        """The values of the row being written, by column key."""
        return self._named


def _bound(
    names: Sequence[str], processors: Sequence[Processor | None], named: Mapping[str, Any]
) -> list[Any]:
    values = []
    for name, process in zip(names, processors, strict=True):
        value = named[name]
        if process is not None and value is not None:
            try:
                value = process(value)
            except Exception as exc:
                raise QueryError(
                    f"parameter :{name} ({type(value).__name__}) does not fit its column's "
                    f"type: {exc}"
                ) from None
        values.append(value)
    return values


class Columns:
    """The columns of a statement's rows: their names, result processors and every key a row
    answers to (names, SQLAlchemy columns and labels)."""

    __slots__ = ("fixed", "keymap", "names", "processors")

    def __init__(self, shape: Shape, names: Sequence[str]) -> None:
        names = tuple(names)
        entries = list(getattr(shape.compiled, "_result_columns", None) or ())
        keymap: dict[object, int] = {}
        processors: list[Processor | None] = [None] * len(names)
        # A compiled statement lists its columns, so they are the same on every run of it.
        self.fixed = bool(entries) and len(entries) == len(names)
        if self.fixed:
            for index, entry in enumerate(entries):
                processors[index] = entry.type._cached_result_processor(shape.dialect, None)
                for key in (entry.keyname, entry.name, *entry.objects):
                    keymap.setdefault(key, index)
        for index, name in enumerate(names):
            keymap.setdefault(name, index)
        for index, name in enumerate(names):
            keymap.setdefault(name.lower(), index)  # as SQLite matches names
        self.names = names
        self.keymap = keymap
        self.processors: tuple[Processor | None, ...] | None = (
            tuple(processors) if any(processors) else None
        )

    def index(self, key: object) -> int:
        """The position of the column ``key`` names (a name, in any case, or a column);
        raises ``KeyError``."""
        try:
            return self.keymap[key]
        except KeyError:
            if isinstance(key, str):
                return self.keymap[key.lower()]
            raise

    def rows(self, rows: Iterable[Sequence[Any]]) -> list[CoreRow]:
        processors = self.processors
        if processors is None:
            return [CoreRow(self, tuple(row)) for row in rows]
        result = []
        for row in rows:
            values = []
            for index, (process, value) in enumerate(zip(processors, row, strict=True)):
                if process is not None and value is not None:
                    try:
                        value = process(value)
                    except Exception as exc:
                        raise QueryError(
                            f"column {self.names[index]!r} holds {value!r:.60}, which its "
                            f"type cannot read: {exc}"
                        ) from None
                values.append(value)
            result.append(CoreRow(self, tuple(values)))
        return result


class CoreRow:
    """A row of a SQLAlchemy statement: ``row["col"]``, ``row[0]``, ``row[table.c.col]``,
    ``row.col``, ``row._mapping`` (which answers to columns too), ``keys()``, ``len(row)``,
    iteration over the values, ``dict(row)``; equal to another row or a tuple of the same
    values."""

    __slots__ = ("_columns", "_values")

    def __init__(self, columns: Columns, values: tuple[Any, ...]) -> None:
        self._columns = columns
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        if key.__class__ is int or key.__class__ is slice:
            return self._values[key]
        try:
            return self._values[self._columns.index(key)]
        except (KeyError, TypeError):  # TypeError: an unhashable key
            raise KeyError(self._missing(key)) from None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._values[self._columns.index(name)]
        except KeyError:
            raise AttributeError(self._missing(name)) from None

    def _missing(self, key: object) -> str:
        return f"the row has no column {key!r}; its columns: {', '.join(self._columns.names)}"

    @property
    def _mapping(self) -> CoreRowMapping:
        """The row as a read-only mapping from column (name or SQLAlchemy column) to value."""
        return CoreRowMapping(self)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._columns.names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CoreRow):
            return self._values == other._values
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return repr(self._values)


class CoreRowMapping(Mapping[Any, Any]):
    """A :class:`CoreRow` seen as a read-only mapping: ``"col" in row._mapping``,
    ``row._mapping[table.c.col]``, iteration over the column names."""

    __slots__ = ("_row",)

    def __init__(self, row: CoreRow) -> None:
        self._row = row

    def __getitem__(self, key: Any) -> Any:
        if key.__class__ is int:
            raise KeyError(key)
        return self._row[key]

    def __contains__(self, key: object) -> bool:
        try:
            self._row._columns.index(key)
        except (KeyError, TypeError):
            return False
        return key.__class__ is not int

    def __iter__(self) -> Iterator[str]:
        return iter(self._row._columns.names)

    def __len__(self) -> int:
        return len(self._row)

    def __repr__(self) -> str:
        return f"RowMapping({dict(self)!r})"


class Statements:
    """Compiles the statements of one backend with its dialect, keeping :data:`CACHE_SIZE`
    shapes. ``check`` refuses the SQL the backend refuses from text (it runs once per shape);
    ``adapt`` readies the values no column type processed (a UUID in a string column), as for
    text queries."""

    def __init__(
        self,
        dialect: Callable[[], Dialect],
        check: Callable[[str], None],
        adapt: Callable[[list[Any]], list[Any]],
    ) -> None:
        self._make_dialect = dialect
        self._dialect: Dialect | None = None
        self._check = check
        self._adapt = adapt
        self._shapes: dict[object, Shape] = {}

    def prepare(self, statement: object, parameters: object) -> Prepared:
        """The SQL and positional values to run ``statement`` with ``parameters`` (a mapping
        or ``None``). Raises :class:`QueryError` for what is not a statement, for parameters
        that are not a mapping, and for a statement that does not compile or whose values do
        not fit their columns."""
        named = _mapping(parameters)
        shape, extracted = self._shape(statement, tuple(sorted(named)) if named else ())
        prepared = shape.values(named, extracted)
        prepared.values = self._adapt(prepared.values)
        return prepared

    def prepare_many(
        self, statement: object, parameter_sets: Sequence[object]
    ) -> tuple[Shape, list[Sequence[Any]]]:
        """The shape and the values of each parameter set for ``execute_many``: every set is a
        mapping with the same names (they make one statement)."""
        sets = [_mapping(item) for item in parameter_sets]
        names = tuple(sorted(sets[0])) if sets and sets[0] else ()
        shape, extracted = self._shape(statement, names)
        if shape.expands:
            raise QueryError(
                "execute_many() cannot run a statement with an expanding IN parameter; "
                f"run it once per value set [sql: {shape.sql}]"
            )
        values: list[Sequence[Any]] = []
        for index, named in enumerate(sets):
            if tuple(sorted(named or ())) != names:
                raise QueryError(
                    f"parameter set {index + 1} of execute_many() names "
                    f"{sorted(named or ())}, the first names {list(names)}; every set of one "
                    f"statement names the same parameters [sql: {shape.sql}]"
                )
            values.append(self._adapt(shape.values(named, extracted).values))
        return shape, values

    def _shape(self, statement: object, names: tuple[str, ...]) -> tuple[Shape, Any]:
        ddl = _kind(statement)
        try:
            key = None if ddl else statement._generate_cache_key()  # type: ignore[attr-defined]
        except Exception as exc:
            raise QueryError(f"cannot compile the SQLAlchemy statement: {_reason(exc)}") from None
        if key is None:
            return self._compile(statement, names, ddl=ddl, key=None), None
        cache_key = (key.key, names)
        shape = self._shapes.get(cache_key)
        if shape is None:
            shape = self._compile(statement, names, ddl=ddl, key=key)
            if len(self._shapes) >= CACHE_SIZE:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[cache_key] = shape
        return shape, key[1]

    def _compile(self, statement: Any, names: tuple[str, ...], *, ddl: bool, key: Any) -> Shape:
        dialect = self._dialect
        if dialect is None:
            dialect = self._dialect = self._make_dialect()
        try:
            if ddl:
                compiled = statement.compile(dialect=dialect)
            else:
                compiled = statement.compile(
                    dialect=dialect, column_keys=list(names), cache_key=key
                )
        except Exception as exc:
            raise QueryError(f"cannot compile the SQLAlchemy statement: {_reason(exc)}") from None
        shape = Shape(compiled, dialect, ddl=ddl)
        unknown = sorted(set(names).difference(getattr(compiled, "binds", ())))
        if unknown:
            raise QueryError(
                f"the statement has no parameter or column named {', '.join(unknown)} "
                f"[sql: {shape.sql}]"
            )
        self._check(shape.sql)
        return shape

    def __len__(self) -> int:
        return len(self._shapes)


_KINDS: dict[type, bool] = {}
"""Classes of statements seen, each with whether it is DDL."""


def _kind(statement: object) -> bool:
    """Whether ``statement``, a SQLAlchemy statement that can run, is DDL; a
    :class:`QueryError` for anything else."""
    kind = _KINDS.get(statement.__class__)
    if kind is not None:
        return kind
    if "sqlalchemy" in sys.modules:
        sql = importlib.import_module("sqlalchemy.sql")
        if isinstance(statement, sql.ClauseElement) and isinstance(statement, sql.Executable):
            ddl = importlib.import_module("sqlalchemy.sql.ddl")
            kind = _KINDS[statement.__class__] = isinstance(statement, ddl.ExecutableDDLElement)
            return kind
        if isinstance(statement, sql.ClauseElement):
            raise QueryError(
                f"a {type(statement).__name__} is part of a statement, not one that can run; "
                "wrap it in select(...)"
            )
    raise QueryError(
        f"the SQL must be a str or a SQLAlchemy Core statement, not {type(statement).__name__}"
    )


def _mapping(parameters: object) -> Mapping[str, Any] | None:
    if parameters is None or parameters.__class__ is dict or isinstance(parameters, Mapping):
        return parameters
    raise QueryError(
        "the parameters of a SQLAlchemy statement are a mapping of names to values, not "
        f"{type(parameters).__name__} (its placeholders are named: bindparam('name'), or the "
        "columns of an insert)"
    )


def _reason(exc: BaseException) -> str:
    # SQLAlchemy's messages end with a link to its error catalogue; the first line says it all.
    return str(exc).split("\n", 1)[0].strip()
