"""The worker side: RQ jobs that process recorded events."""
