"""The driver: cluster membership, group planning and the run state machine."""
