"""Background jobs: one subprocess per job, a queue per device, a run folder per job."""
