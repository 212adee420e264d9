"""Durable state: a SQLite catalog per collection plus fixed-width row files read through mmap."""
