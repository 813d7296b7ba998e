"""Structured surgery: channel dependencies, physical removal, data-free merging."""
