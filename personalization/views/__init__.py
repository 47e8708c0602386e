"""Dashboard pages of the personalization app, one module per area."""
