"""The reconciler: watches Git, plans placements, converges hosts, reports status and drift."""
