"""The CNI entry point: environment and stdin in, a result or an error object out."""
