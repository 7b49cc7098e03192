"""Model merging: pure per-tensor methods (api.py declares them, catalogue.py lists them) and a streaming
engine (engine.py) that owns devices, dtypes and I/O."""
