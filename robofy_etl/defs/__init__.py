"""The Dagster layer: resources, partitions, assets, checks and schedules. Kept thin."""
