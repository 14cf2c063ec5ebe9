"""The user-facing layer: Engine, Dataset lineage, and the stage programs slots execute."""
