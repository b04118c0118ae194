"""`solrl bench ...`: measured speed of rollouts, iterations and weight syncs (results go to docs/results/)."""
