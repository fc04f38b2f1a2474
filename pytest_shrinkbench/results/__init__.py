"""Results: the row schema, run files, the store, and what is built from rows (leaderboard, report, plots, gate)."""
