"""The merge-vs-mix grid as tables (pandas) and plots (matplotlib), the inputs of `snakemake --report`."""
