"""Benchmarks for async_store against the libraries its users would otherwise pick.

Run ``python -m benchmarks`` (``make bench``); ``--quick`` for a smoke test, ``--only NAME`` to
select scenarios (``--only A,B`` for several), ``--json PATH`` to keep the results. Every
scenario runs every contender in the same process, each on a fresh copy of the scenario's
database in a temporary directory, and prints one table with ratios against the scenario's
baseline measured in the same run. Targets are printed as PASS/FAIL, never asserted.

Layout:

- ``harness``: `Scenario`, `Contender`, measurements, timing and the guarded run;
- ``clients``: one module per contender library, each behind the same small `Client` protocol;
- ``scenarios``: one module per family of workloads, and the `REGISTRY` of scenarios;
- ``schema``: the benchmark table and the template databases;
- ``report``: tables and JSON.
"""
