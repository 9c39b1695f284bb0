"""Matrix: matrix files, expansion into cells, and running them."""
