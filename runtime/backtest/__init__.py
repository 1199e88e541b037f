"""The backtest: a config's strategies over historical candles, through the worker's own code.

Layers, imports pointing down: ``data`` (candles as numpy columns from CSV or Parquet,
checked, resampled, gaps reported) -> ``engine`` (one strategy: the worker's StrategyRunner
with its container, fed candle by candle, equity followed) -> ``stats`` (backtesting.py's
statistics with numpy) -> ``report`` (one self-contained HTML file) -> ``run`` (one process
per strategy, the journal, the portfolio) -> ``command`` (the ``stratrun backtest`` CLI).
"""
