"""The Kubernetes side: Kopf handlers (thin), the trigger registry, the status writer, the CLI wiring."""
