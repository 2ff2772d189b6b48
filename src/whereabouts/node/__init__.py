"""The node side: the node daemon, install-cni, the runtime that serves calls, and the plugin launcher."""
