"""Test and local-development support: a real Kubernetes control plane (etcd + kube-apiserver)."""
