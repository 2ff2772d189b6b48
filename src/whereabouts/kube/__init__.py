"""The only package that talks to the Kubernetes API: credentials (kubeconfig, in-cluster) and a REST client."""
