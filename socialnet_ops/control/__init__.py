"""The entry points on top: the CLI, the demo, the local control plane, its worker, status."""
