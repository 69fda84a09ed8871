"""routing/backends."""
