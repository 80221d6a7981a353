"""Data cleansing with SGD-influence and its storage-efficient final-parameter variant."""
