"""Helpers shared by the tests and the benchmarks (bench/ imports them too); none ships.

- :mod:`tests.support.webapi`: contract events, publishing to a broker, the app in-process,
  a producer subprocess.
- :mod:`tests.support.synthetic`: deterministic fleet telemetry for the Streamlit app.
- :mod:`tests.support.processes`: stopping a subprocess on purpose.
"""
