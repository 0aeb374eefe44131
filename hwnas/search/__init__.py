"""Search: relaxations, architecture-gradient strategies, the search objective and loop."""
