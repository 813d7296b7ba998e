"""Changing a model's structure: compaction, data-free merging, runtime gates, and the records that replay them."""
