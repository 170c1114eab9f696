"""Benchmarks, one module per benchmark, each printing a table measured side by side in one run:

- :mod:`condiff.bench.gpu`: the network's speed rows, plain and optimised (``condiff bench``);
- :mod:`condiff.bench.train_loop`: ``condiff train``'s own loop beside the bare step;
- :mod:`condiff.bench.cpu_deploy`: CPU deployment paths and advice (``--cpu-deploy``);
- :mod:`condiff.bench.serve_load`: the HTTP server under load (``--serve``).

Shared: :mod:`condiff.bench.timing` (the median timer, the table writer).
"""
