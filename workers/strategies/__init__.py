"""Built-in example strategies."""
