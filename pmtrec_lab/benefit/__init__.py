"""The benefit map: who benefits from which auxiliary task, measured per user and per item
(issue "PMTRec v4", part 1). ``plan`` builds its grids; ``measure`` gathers the runs' per-entity
validation metrics; ``analysis`` computes benefit, its noise and structure, and scores weightings."""
