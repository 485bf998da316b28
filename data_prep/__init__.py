"""data_prep: turns raw datasets, and the kit's built-in synthetic ones, into stkit's on-disk formats."""
