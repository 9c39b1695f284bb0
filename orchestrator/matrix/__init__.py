"""Matrix: matrix files, expansion into cells, the scheduler, and one cell run end to end."""
