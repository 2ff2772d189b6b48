"""`whereabouts-controller`: the long-running parts beside the plugin (reconciler, pod cleanup, node slices)."""
