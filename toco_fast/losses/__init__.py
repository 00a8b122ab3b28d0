"""ToCo training losses."""
