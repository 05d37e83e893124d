"""Reading and writing what users keep: pose tables (DLC/Lightning Pose layout) and storage paths."""
