"""3H data: sources mapped to one row schema, hashed splits, per-dimension datasets, mixtures."""
