"""Console tables, progress bars, metric logs and plots."""
