"""One module per kind of component: how it is prepared, started, probed and stopped."""
