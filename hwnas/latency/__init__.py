"""Latency: timing backends, lookup-table building (`profile`), `LatencyTable`, calibration.

Import the submodules you need (`hwnas.latency.table`, `.profiler`, `.calibrate`, …);
nothing here runs on import.
"""
