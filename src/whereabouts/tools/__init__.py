"""`kubectl whereabouts`: the operator's tools (a kubectl plugin, the executable `kubectl-whereabouts`).

An entry point like the CNI executable and the controllers: it reads stores through their own code (the
Store and Inventory protocols, whereabouts.kube.resources for the Kubernetes objects), writes through the
IPAM service's guarded transactions, and judges leaks by the reconciler's rules (controller.leaks). Nothing
imports it.
"""
