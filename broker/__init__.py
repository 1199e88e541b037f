"""Market-data broker: reads candle sources, stamps per-stream seq, publishes on PUB."""
